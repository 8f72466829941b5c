package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	pb "github.com/spear-go/spear/api/spearlet"
)

// gatedTicksBody prints "tick 1" .. "tick $TICKS" (default 3), then, when
// $GATE is set, waits for that file to exist, then prints "after gate":
// the test decides when it ends, with no sleeps of its own.
const gatedTicksBody = `i=1
while [ "$i" -le "${TICKS:-3}" ]; do echo "tick $i"; i=$((i + 1)); done
if [ -n "$GATE" ]; then while [ ! -e "$GATE" ]; do sleep 0.05; done; fi
echo "after gate"
`

// consoleEnv is a node, a browser on its console and a gated script.
type consoleEnv struct {
	n      *node
	b      *browser
	script string // gatedTicksBody's path
	dir    string // for gate files
}

// TestConsole drives the web console in headless Chromium against a real
// node: every page, its forms, live status, attach, cancel and filters,
// at desktop and phone width, light and dark. Each step asserts on the
// DOM and saves a screenshot.
func TestConsole(t *testing.T) {
	n := startNode(t, "", nodeOpts{workers: 4})
	e := &consoleEnv{n: n, b: newBrowser(t, n.httpURL()), dir: t.TempDir()}
	e.script, _ = writeScript(t, e.dir, "ticks.sh", gatedTicksBody)
	for _, step := range []struct {
		name string
		run  func(t *testing.T, e *consoleEnv)
	}{
		{"overview", consoleOverview},
		{"register task via form", consoleRegister},
		{"invoke sync", consoleInvokeSync},
		{"async ticker completes live", consoleAsyncLive},
		{"attach to a running stream", consoleAttach},
		{"cancel from the execution page", consoleCancel},
		{"filter executions by FAILED", consoleFilterFailed},
		{"nodes", consoleNodes},
		{"phone width and dark", consolePhoneDark},
		{"lost connection banner", consoleReconnect},
	} {
		e.b.t = t
		if !t.Run(step.name, func(t *testing.T) { e.b.t = t; step.run(t, e) }) {
			return // later steps build on earlier ones
		}
	}
}

// gate is a gate file for gatedTicksBody; open creates it.
func (e *consoleEnv) gate(t *testing.T, name string) (path string, open func()) {
	path = filepath.Join(e.dir, name)
	return path, func() {
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startGated starts an async execution of the gated task (registered by
// the register step) and returns its id.
func (e *consoleEnv) startGated(t *testing.T, gate string) string {
	req := invocation(t, "ui-ticks", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil)
	req.Context.Environment = map[string]string{"GATE": gate}
	resp := e.n.invoke(t, req)
	if resp.GetExecutionId() == "" {
		t.Fatalf("async invocation refused: %s", resp.GetMessage())
	}
	return resp.GetExecutionId()
}

// statusIs is a JavaScript test of the execution page's status badge.
func statusIs(s string) string {
	return fmt.Sprintf(`document.querySelector("#exec-status .badge")?.dataset.status === %q`, s)
}

func consoleOverview(t *testing.T, e *consoleEnv) {
	b := e.b
	b.open("/ui/")
	b.waitFor("health", `document.querySelector('[data-part=health] .badge')?.textContent === "healthy"`)
	b.waitFor("capacity, queue bands and charts", `document.querySelectorAll(".bands .big").length === 5 &&
		document.querySelectorAll("svg.chart polyline").length === 4 && /\d+ \/ \d+/.test(document.querySelector("[data-part=capacity]").textContent)`)
	if rt := b.text("[data-part=capacity]"); !strings.Contains(rt, "process") || !strings.Contains(rt, "wasm") {
		t.Errorf("capacity does not name the node's runtimes: %q", rt)
	}
	if cur := b.text(`.top nav a[aria-current="page"]`); cur != "Overview" {
		t.Errorf("current navigation entry %q, want Overview", cur)
	}
	b.shot("overview-empty")
}

func consoleRegister(t *testing.T, e *consoleEnv) {
	b := e.b
	b.open("/ui/tasks")
	b.waitFor("the task list", `document.querySelector("#task-list table")?.textContent.includes("upper")`)
	form := "#register-form "
	// Checked in the page: nothing is sent.
	b.do(setValue(form+"input[name=taskId]", "not an id!"), clickOn(form+"button[type=submit]"))
	b.waitFor("the form's own check", `document.querySelector("#register-form .error:not([hidden])")?.textContent.startsWith("Task id:")`)
	// Refused by the node: its error code and message as they are.
	b.do(setValue(form+"input[name=taskId]", "ui-bad"), setValue(form+"input[name=location]", "/nonexistent/ticks.sh"),
		clickOn(form+"button[type=submit]"))
	b.waitFor("the node's error", `/^[A-Z][A-Z_]+: ./.test(document.querySelector("#register-form .error:not([hidden])")?.textContent || "")`)
	t.Logf("the node refused: %s", b.text("#register-form .error"))
	// By keyboard: typed, and Enter in a field submits.
	b.do(clearField(form+"input[name=taskId]"), clearField(form+"input[name=location]"),
		chromedp.SendKeys(chromedp.CSS(form+"input[name=taskId]"), "ui-ticks"),
		chromedp.SendKeys(chromedp.CSS(form+"input[name=location]"), e.script+kb.Enter))
	b.waitFor("registered", `document.querySelector("#register-form .okmsg:not([hidden])")?.textContent.startsWith("Registered task ui-ticks")`)
	b.waitFor("the new task listed", `[...document.querySelectorAll("#task-list td a")].some(a => a.textContent === "ui-ticks")`)
	b.do(setValue("#task-search", "ui-t"), dispatch("#task-search", "input"))
	b.waitFor("the search", `document.querySelectorAll("#task-list tbody tr").length === 1`)
	b.shot("tasks")
}

func consoleInvokeSync(t *testing.T, e *consoleEnv) {
	b := e.b
	b.open("/ui/tasks/upper")
	b.do(setValue("#invoke-form textarea[name=input]", "hello console"), setValue("#invoke-form select[name=mode]", "sync"),
		clickOn("#invoke-form button[type=submit]"))
	b.waitFor("the output", `document.querySelector("#invoke-result pre.out")?.textContent === "HELLO CONSOLE"`)
	b.waitFor("COMPLETED", `document.querySelector("#invoke-result .badge")?.dataset.status === "COMPLETED"`)
	b.waitFor("the execution listed", `document.querySelectorAll("#task-executions tbody tr").length >= 1`)
	b.shot("task")
}

func consoleAsyncLive(t *testing.T, e *consoleEnv) {
	b := e.b
	gate, open := e.gate(t, "async-gate")
	b.open("/ui/tasks/ui-ticks")
	b.do(setValue("#invoke-form select[name=mode]", "async"), setValue("#invoke-form textarea[name=env]", "GATE="+gate),
		clickOn("#invoke-form button[type=submit]"))
	b.waitFor("the execution's link", `document.querySelector('#invoke-result a[href^="/ui/executions/"]') !== null`)
	b.do(clickOn(`#invoke-result a[href^="/ui/executions/"]`))
	b.waitFor("the execution page", `location.pathname.startsWith("/ui/executions/") && document.querySelector("#exec-status .badge")`)
	b.waitFor("RUNNING", statusIs("RUNNING"))
	eval[bool](b, `window.stillThisPage = true`)
	b.shot("execution-running")
	open()
	b.waitFor("COMPLETED", statusIs("COMPLETED"))
	if !eval[bool](b, `window.stillThisPage === true`) {
		t.Fatal("the page was loaded again: the status should change in place")
	}
	b.waitFor("the output", `document.querySelector("#exec-output pre.out")?.textContent === "tick 1\ntick 2\ntick 3\nafter gate\n"`)
	b.waitFor("the timeline", `document.querySelectorAll("#exec-timeline li").length === 3 &&
		document.querySelector("#exec-timeline li:last-child").classList.contains("st-COMPLETED")`)
	b.shot("execution")
}

func consoleAttach(t *testing.T, e *consoleEnv) {
	b := e.b
	gate, open := e.gate(t, "attach-gate")
	id := e.startGated(t, gate)
	b.open("/ui/executions/" + id)
	b.waitFor("RUNNING", statusIs("RUNNING"))
	b.do(clickOn("#attach-button"))
	b.waitFor("the chunks so far", `document.querySelector("#exec-attach pre.out")?.textContent.includes("tick 3")`)
	open()
	b.waitFor("a chunk written after attaching", `document.querySelector("#exec-attach pre.out").textContent.endsWith("after gate\n")`)
	b.waitFor("the stream's end", `document.querySelector("#exec-attach .badge")?.dataset.status === "COMPLETED"`)
	if n, _ := strconv.Atoi(strings.Fields(b.text("#exec-attach span.muted") + " 0")[0]); n < 2 {
		t.Errorf("attached output counted %q, want 2 or more chunks", b.text("#exec-attach span.muted"))
	}
	b.waitFor("COMPLETED, with the output", statusIs("COMPLETED")+` && document.querySelector("#exec-output pre.out") !== null`)
	b.shot("execution-attached")
}

func consoleCancel(t *testing.T, e *consoleEnv) {
	b := e.b
	id := e.startGated(t, filepath.Join(e.dir, "never"))
	b.open("/ui/executions/" + id)
	b.waitFor("RUNNING", statusIs("RUNNING"))
	b.do(clickOn("#cancel-button"))
	b.waitFor("CANCELLED, and the node's answer", statusIs("CANCELLED")+` && !document.querySelector("#action-done").hidden`)
	t.Logf("the node answered: %s", b.text("#action-done"))
	b.waitFor("no cancel button once ended", `document.querySelector("#cancel-button") === null &&
		document.querySelector("#exec-timeline li:last-child").classList.contains("st-CANCELLED")`)
	if st := e.n.status(t, id).GetResult().GetStatus(); st != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		t.Errorf("the node says %v, want CANCELLED", st)
	}
	b.shot("execution-cancelled")
}

func consoleFilterFailed(t *testing.T, e *consoleEnv) {
	b := e.b
	for range 2 {
		e.n.invoke(t, invocation(t, "fail", pb.ExecutionMode_EXECUTION_MODE_SYNC, nil))
	}
	b.open("/ui/executions")
	b.waitFor("other statuses listed", `[...document.querySelectorAll("#exec-table .badge")].some(x => x.dataset.status === "COMPLETED")`)
	b.do(setValue("#exec-filter select[name=status]", "FAILED"), clickOn(`#exec-filter button[type=submit]`))
	b.waitFor("only FAILED rows", `(() => { const s = [...document.querySelectorAll("#exec-table tbody .badge")].map(x => x.dataset.status);
		return s.length >= 2 && s.every(x => x === "FAILED"); })()`)
	if q := eval[string](b, `location.search`); q != "?status=FAILED" {
		t.Errorf("the URL's query is %q, want ?status=FAILED (bookmarkable)", q)
	}
	b.shot("executions-failed")
	b.open("/ui/executions?status=FAILED&task=fail")
	b.waitFor("the filter from the URL", `document.querySelector("#exec-filter select[name=status]").value === "FAILED" &&
		document.querySelectorAll("#exec-table tbody tr").length >= 2`)
}

func consoleNodes(t *testing.T, e *consoleEnv) {
	b := e.b
	gate, open := e.gate(t, "nodes-gate")
	id := e.startGated(t, gate)
	defer open()
	b.open("/ui/nodes")
	b.waitFor("this node, running the execution", fmt.Sprintf(`document.querySelector("#node-list tbody")?.textContent.includes("(this one)") &&
		document.querySelector('#node-list a[href="/ui/executions/%s"]') !== null && document.querySelector("#node-list .meter") !== null`, id))
	b.shot("nodes")
}

func consolePhoneDark(t *testing.T, e *consoleEnv) {
	b := e.b
	b.open("/ui/")
	b.waitFor("recent failures", `document.querySelector("[data-part=failures] tbody")?.textContent.includes("fail")`)
	b.waitFor("executions charted", `/[1-9]\d* finished/.test(document.querySelector("[data-part=rate]").textContent)`)
	t.Logf("README screenshot: %s", b.shot("overview"))
	b.colorScheme("dark")
	b.open("/ui/")
	b.waitFor("dark colours", `getComputedStyle(document.body).backgroundColor === "rgb(15, 18, 22)"`)
	b.waitFor("health", `document.querySelector('[data-part=health] .badge') !== null`)
	b.shot("overview-dark")
	b.colorScheme("light")
	b.do(emulatePhone())
	for _, p := range []struct{ path, ready string }{
		{"/ui/", `document.querySelector(".bands") && document.querySelector("[data-part=failures] table")`},
		{"/ui/executions", `document.querySelector("#exec-table table")`},
		{"/ui/tasks/ui-ticks", `document.querySelector("#task-executions table") && document.querySelector("svg.chart")`},
	} {
		b.open(p.path)
		b.waitFor(p.path+" loaded", p.ready)
		if w := eval[int](b, `document.documentElement.scrollWidth - window.innerWidth`); w > 1 {
			t.Errorf("%s is %d px wider than a phone's screen", p.path, w)
		}
	}
	b.shot("task-phone")
	b.open("/ui/")
	b.waitFor("health", `document.querySelector('[data-part=health] .badge') !== null`)
	b.shot("overview-phone")
	b.do(desktop())
}

func consoleReconnect(t *testing.T, e *consoleEnv) {
	b := e.b
	b.open("/ui/")
	b.waitFor("health", `document.querySelector('[data-part=health] .badge') !== null`)
	if err := e.n.stop(); err != nil {
		t.Fatalf("stopping the node: %v", err)
	}
	b.waitFor("the banner", `!document.querySelector("#banner").hidden`)
	b.shot("overview-disconnected")
	e.n = startNode(t, e.n.dataDir, nodeOpts{addr: e.n.addr, workers: 4})
	b.waitFor("the banner gone", `document.querySelector("#banner").hidden`)
	b.waitFor("health again", `document.querySelector('[data-part=health] .badge')?.textContent === "healthy"`)
}

// TestConsoleToken runs the console against a node that checks tokens:
// the pages load, the token prompt opens, a malformed token is refused
// in the page, a read token shows the node, and a call beyond its scope
// shows the node's error code and message.
func TestConsoleToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	read := createToken(t, file, "read", "console-read")
	n := startNode(t, "", nodeOpts{args: []string{"--token-file", file}})
	b := newBrowser(t, n.httpURL())
	b.open("/ui/")
	b.waitFor("the token prompt", `document.querySelector("#token-dialog").open &&
		document.querySelector("#token-reason").textContent.includes("AUTH_REQUIRED")`)
	b.do(chromedp.SendKeys(chromedp.CSS("#token-input"), "not-a-token"+kb.Enter))
	b.waitFor("the form's own check", `!document.querySelector("#token-error").hidden`)
	b.shot("token-prompt")
	b.do(clearField("#token-input"), chromedp.SendKeys(chromedp.CSS("#token-input"), read+kb.Enter))
	b.waitFor("the node, with the token", `document.querySelector('[data-part=health] .badge')?.textContent === "healthy" &&
		!document.querySelector("#token-dialog").open`)
	if got := eval[string](b, `sessionStorage.getItem("spear-token")`); got != read {
		t.Errorf("session storage holds %q, want the token typed", got)
	}
	b.open("/ui/tasks")
	b.do(setValue("#register-form input[name=taskId]", "console-denied"),
		setValue("#register-form input[name=location]", "/tmp/x.sh"), clickOn("#register-form button[type=submit]"))
	b.waitFor("the node's refusal", `document.querySelector("#register-form .error:not([hidden])")?.textContent.startsWith("AUTH_SCOPE: ")`)
	b.shot("tasks-scope-refused")
	if strings.Contains(n.log.String(), read) {
		t.Error("the node's log holds the token")
	}
}
