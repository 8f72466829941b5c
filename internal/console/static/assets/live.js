// live.js: keeping a page current — periodic refreshes while the tab is
// visible, and following one execution's status as it changes.
import { call, stream } from "./api.js";
import { terminal } from "./ui.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// every runs fn now, then every ms while the tab is visible, and at once
// when the tab shows again or the node answers again after a lost
// connection. Runs never overlap; fn shows its own errors.
export function every(ms, fn) {
  let timer = 0;
  let running = false;
  let stopped = false;
  const run = async () => {
    clearTimeout(timer);
    if (stopped || running) return;
    running = true;
    try { await fn(); } catch (e) { console.warn(e); } finally { running = false; }
    if (!stopped && !document.hidden) timer = setTimeout(run, ms);
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
  window.addEventListener("spear:reconnected", run);
  run();
  return { stop() { stopped = true; clearTimeout(timer); }, now: run };
}

// follow reports an execution's status changes to onEvent ({status,
// result, time}) until it is terminal: over WatchExecution, again after
// a lost connection, and by polling GetExecutionStatus when the node
// cannot stream it. onError gets a refusal. It returns an AbortController.
export function follow(id, onEvent, onError) {
  const ctl = new AbortController();
  watchLoop(id, onEvent, onError, ctl.signal);
  return ctl;
}

async function watchLoop(id, onEvent, onError, signal) {
  let backoff = 500;
  while (!signal.aborted) {
    let last = "";
    try {
      await stream("WatchExecution", { executionId: id }, (ev) => { last = ev.status; onEvent(ev); }, signal);
      if (terminal(last)) return;
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e.code === "UNIMPLEMENTED" || e.code === "HTTP_415") return poll(id, onEvent, onError, signal);
      if (e.status !== 0) return onError(e);
    }
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 5000);
  }
}

async function poll(id, onEvent, onError, signal) {
  while (!signal.aborted) {
    try {
      const st = await call("GetExecutionStatus", { executionId: id }, signal);
      if (!st.found) return onError({ code: "EXECUTION_NOT_FOUND", message: st.message });
      onEvent({ executionId: id, status: st.result.status, result: st.result });
      if (terminal(st.result.status)) return;
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e.status !== 0) return onError(e);
    }
    await sleep(1000);
  }
}
