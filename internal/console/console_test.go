package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	tests := []struct {
		path        string
		status      int
		contentType string
	}{
		{"/ui/", 200, "text/html"},
		{"/ui/tasks", 200, "text/html"},
		{"/ui/tasks/", 200, "text/html"},
		{"/ui/tasks/upper", 200, "text/html"},
		{"/ui/executions", 200, "text/html"},
		{"/ui/executions/01a2", 200, "text/html"},
		{"/ui/nodes", 200, "text/html"},
		{"/ui/assets/app.js", 200, "text/javascript"},
		{"/ui/assets/style.css", 200, "text/css"},
		{"/ui/assets/icon.svg", 200, "image/svg+xml"},
		{"/ui/nodes/x", 404, ""},
		{"/ui/tasks/a/b", 404, ""},
		{"/ui/index.html", 404, ""},
		{"/ui/assets/", 404, ""},
		{"/ui/assets/pages/", 404, ""},
		{"/ui/other", 404, ""},
		{"/elsewhere", 404, ""},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
		if rec.Code != tt.status || !strings.HasPrefix(rec.Header().Get("Content-Type"), tt.contentType) {
			t.Errorf("%s: %d %q, want %d %q", tt.path, rec.Code, rec.Header().Get("Content-Type"), tt.status, tt.contentType)
		}
	}
}

// TestModulesResolve checks that every module a script imports, and every
// file the shell links, is embedded: a typo would only show in a browser.
func TestModulesResolve(t *testing.T) {
	imports := regexp.MustCompile(`(?m)(?:from|import)\s+"(\.{1,2}/[^"]+)"`)
	err := fs.WalkDir(static, "static/assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".js") {
			return err
		}
		src, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		for _, m := range imports.FindAllStringSubmatch(string(src), -1) {
			if _, err := fs.Stat(static, path.Join(path.Dir(p), m[1])); err != nil {
				t.Errorf("%s imports %s: %v", p, m[1], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	shell, err := fs.ReadFile(static, "static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?:href|src)="/ui/(assets/[^"]+)"`).FindAllStringSubmatch(string(shell), -1) {
		if _, err := fs.Stat(static, "static/"+m[1]); err != nil {
			t.Errorf("index.html links %s: %v", m[1], err)
		}
	}
	app, _ := fs.ReadFile(static, "static/assets/app.js")
	routes := regexp.MustCompile(`/, "(\w+)", "`).FindAllStringSubmatch(string(app), -1)
	if len(routes) != 6 {
		t.Errorf("app.js has %d routes, want the 6 pages", len(routes))
	}
	for _, m := range routes {
		if _, err := fs.Stat(static, "static/assets/pages/"+m[1]+".js"); err != nil {
			t.Errorf("app.js routes to page %s: %v", m[1], err)
		}
	}
}

// TestNoInlineScript keeps the shell within its content security policy.
func TestNoInlineScript(t *testing.T) {
	shell, _ := fs.ReadFile(static, "static/index.html")
	if regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`).Match(shell) || strings.Contains(string(shell), " style=") ||
		regexp.MustCompile(`\son\w+=`).Match(shell) {
		t.Error("index.html has inline script or style, which the policy refuses")
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/", nil))
	if !strings.Contains(rec.Header().Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("policy %q", rec.Header().Get("Content-Security-Policy"))
	}
}
