// pages/tasks.js: /ui/tasks — every task, a search, and the register form
// (a path on the node, or a file uploaded to it).
import { call, request } from "../api.js";
import { form, limitsFields } from "../forms.js";
import {
  ago, badge, card, check, field, fmtTime, h, message, page, replace, say, showError, table, taskLink,
} from "../ui.js";

const ID_RULE = /^[A-Za-z0-9_-]{1,128}$/;

export function render() {
  const list = h("div", { id: "task-list" }, h("p", { class: "muted", text: "Loading…" }));
  const err = message();
  const q = new URLSearchParams(location.search).get("q") || "";
  const search = h("input", { type: "search", id: "task-search", value: q, "aria-label": "Search tasks",
    placeholder: "Search by id, name, runtime or location" });
  let tasks = [];
  const show = () => replace(list, taskTable(matching(tasks, search.value)));
  const load = async () => {
    try { tasks = await allTasks(); showError(err, null); show(); } catch (e) { showError(err, e); }
  };
  search.addEventListener("input", () => {
    history.replaceState(null, "", search.value ? "?q=" + encodeURIComponent(search.value) : location.pathname);
    show();
  });
  page("Tasks", h("div", { class: "split" }, card("All tasks", search, err, list), registerCard(load)));
  load();
}

// allTasks pages through ListTasks.
async function allTasks() {
  let out = [];
  let startAfter = "";
  for (let i = 0; i < 20; i++) {
    const r = await call("ListTasks", { includeDetails: true, limit: 1000, startAfter });
    out = out.concat(r.tasks || []);
    if (!r.hasMore) break;
    startAfter = r.nextStartAfter;
  }
  return out;
}

function matching(tasks, q) {
  q = q.trim().toLowerCase();
  if (!q) return tasks;
  const text = (t) => [t.taskId, t.taskName, t.description, t.artifactSpec?.artifactType, t.artifactSpec?.location].join(" ").toLowerCase();
  return tasks.filter((t) => text(t).includes(q));
}

function taskTable(tasks) {
  return table([
    { label: "Task", nowrap: true, cell: (t) => taskLink(t.taskId) },
    { label: "Runtime", cell: (t) => t.artifactSpec?.artifactType || "" },
    { label: "Location", narrow: true, cell: (t) => h("span", { class: "clip mono", title: t.artifactSpec?.location || "", text: t.artifactSpec?.location || "" }) },
    { label: "Executions", num: true, cell: (t) => String(t.executionCount || 0) },
    { label: "Last", cell: (t) => (t.lastStatus ? badge(t.lastStatus) : "") },
    { label: "Updated", narrow: true, nowrap: true, cell: (t) => h("span", { title: fmtTime(t.updatedAt), text: ago(t.updatedAt) }) },
  ], tasks, "No tasks match.");
}

// registerCard is the register form; onDone runs after a registration.
function registerCard(onDone) {
  const f = registerFields();
  return card("Register a task", form("register-form", "Register task", f.el, f.read, async (req, ok) => {
    const resp = await register(req, f.file());
    say(ok, resp.created ? "Registered task " : "Already registered: ", taskLink(resp.task.taskId));
    onDone();
  }));
}

async function register(req, file) {
  if (file) {
    const up = await (await request("/api/v1/artifacts?name=" + encodeURIComponent(file.name), { method: "PUT", body: file })).json();
    req.artifactSpec.location = up.location;
  }
  return call("RegisterTask", req);
}

// registerFields are the form's fields; read() checks them and returns
// the RegisterTask request or {error}.
function registerFields() {
  const id = h("input", { type: "text", name: "taskId", autocomplete: "off", required: true });
  const type = h("select", { name: "artifactType" }, ["process", "wasm", "docker"].map((t) => h("option", { value: t, text: t })));
  const location = h("input", { type: "text", name: "location", autocomplete: "off" });
  const file = h("input", { type: "file", name: "file" });
  const desc = h("input", { type: "text", name: "description" });
  const limits = limitsFields({}, ["maxConcurrency", "maxQueued", "defaultTimeoutMs"]);
  const el = h("div", { class: "stack" },
    h("div", { class: "fields" }, field("Task id", id, "1-128 of A-Z a-z 0-9 _ -"), field("Runtime", type)),
    field("Location", location, "a path under the node's artifact roots, or an image for docker"),
    field("…or upload a file", file, "sent to the node's artifact store; the location is then ignored"),
    field("Description", desc), h("details", {}, h("summary", { text: "Limits" }), limits.el));
  const read = () => {
    const bad = [
      check(id, !ID_RULE.test(id.value.trim()), "Task id: 1-128 characters of A-Z a-z 0-9 _ -"),
      check(location, !location.value.trim() && !file.files.length, "Location: give a path (or an image), or choose a file to upload"),
      check(file, file.files.length > 0 && type.value === "docker", "Upload: a docker task names an image, not a file"),
    ].filter(Boolean);
    const lim = limits.read();
    if (bad.length || lim.error) return { error: [...bad, lim.error].filter(Boolean).join("\n") };
    return { taskId: id.value.trim(), taskDescription: desc.value.trim(), limits: lim.limits,
      artifactSpec: { artifactType: type.value, location: location.value.trim() } };
  };
  return { el, read, file: () => file.files[0] };
}
