// app.js: the console's entry point. The node serves the same shell at
// every page's URL; this picks the page's module from the URL and runs it.
import { auth } from "./api.js";
import { h, page } from "./ui.js";

// routes: URL pattern, page module, navigation section.
const routes = [
  [/^\/ui\/?$/, "overview", ""],
  [/^\/ui\/tasks\/?$/, "tasks", "tasks"],
  [/^\/ui\/tasks\/([^/]+)\/?$/, "task", "tasks"],
  [/^\/ui\/executions\/?$/, "executions", "executions"],
  [/^\/ui\/executions\/([^/]+)\/?$/, "execution", "executions"],
  [/^\/ui\/nodes\/?$/, "nodes", "nodes"],
];

function markNav(section) {
  for (const a of document.querySelectorAll(".top nav a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
  }
}

async function start() {
  auth.setup();
  for (const [re, name, section] of routes) {
    const m = location.pathname.match(re);
    if (!m) continue;
    markNav(section);
    const mod = await import(`./pages/${name}.js`);
    return mod.render(m[1] ? decodeURIComponent(m[1]) : undefined);
  }
  page("Not found", h("p", {}, "No page here. ", h("a", { href: "/ui/" }, "Go to the overview.")));
}

start();
