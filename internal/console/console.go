// Package console is the node's web console: a page shell, a style sheet
// and one JavaScript module per page, embedded in the binary and served
// under /ui/ on the node's own listener. No build step: the files are
// served as they are written.
//
// The pages hold no data. They call the node's API from the browser
// (Connect JSON, the REST routes, and the console's data routes in
// package server) with the token the user typed, kept in the tab's
// sessionStorage. Nothing runs on the node for the console unless a
// browser asks.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// static holds the console's files: index.html (the shell of every page)
// and assets/.
//
//go:embed static
var static embed.FS

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// contentPolicy keeps the console's pages to the node's own scripts,
// styles and API: no inline script, no plugin, no framing.
const contentPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the console: its assets under /ui/assets/, and the page
// shell at each page's URL (/ui/, /ui/tasks, /ui/tasks/ID, /ui/executions,
// /ui/executions/ID, /ui/nodes), so that each can be bookmarked. Other
// paths are not found.
func Handler() http.Handler {
	root, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	files := http.StripPrefix(Prefix, http.FileServerFS(root))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache") // always revalidated: a new binary's files show at once
		switch {
		case isAsset(rest):
			files.ServeHTTP(w, r)
		case isPage(rest):
			http.ServeFileFS(w, r, root, "index.html")
		default:
			http.NotFound(w, r)
		}
	})
}

// isAsset says whether rest (the path under Prefix) names a file under
// assets/; directories are not listed.
func isAsset(rest string) bool {
	return strings.HasPrefix(rest, "assets/") && !strings.HasSuffix(rest, "/")
}

// isPage says whether rest (the path under Prefix) is one of the
// console's pages.
func isPage(rest string) bool {
	section, id, hasID := strings.Cut(strings.TrimSuffix(rest, "/"), "/")
	switch section {
	case "", "nodes":
		return !hasID
	case "tasks", "executions":
		return !hasID || (id != "" && !strings.Contains(id, "/"))
	}
	return false
}
