package admin

import (
	"embed"
	"io/fs"
	"net/http"
)

// ui holds the dashboard: plain HTML, CSS and JavaScript modules, embedded
// so the admin port serves it offline (no CDN, no build step).
//
//go:embed ui
var ui embed.FS

// registerUI serves the dashboard at / and its assets under /ui/, and the
// sidecar's identity at /info.
func (s *Server) registerUI(mux *http.ServeMux) {
	assets, err := fs.Sub(ui, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(assets)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, assets, "index.html")
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", files))
	mux.HandleFunc("GET /info", s.serveInfo)
}
