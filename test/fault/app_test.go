package fault

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// The application's behaviours, switched by POST /control/mode/<mode>.
const (
	modeOK   = "ok"   // 200 at once
	modeSlow = "slow" // 200 after 500 ms
	mode503  = "503"  // 503 at once; the health check still passes
)

// serveApp is the application process: an HTTP server on addr whose
// behaviour the test switches, and which counts the calls it served.
func serveApp(addr string) {
	var mode atomic.Value
	mode.Store(modeOK)
	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /control/mode/{mode}", func(w http.ResponseWriter, r *http.Request) {
		mode.Store(r.PathValue("mode"))
	})
	mux.HandleFunc("/control/count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, served.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		switch mode.Load().(string) {
		case modeSlow:
			time.Sleep(500 * time.Millisecond)
		case mode503:
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	os.Exit(1)
}

// app is a running application process.
type app struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startApp starts the test binary as an application on a free port and
// waits until it answers.
func startApp(t *testing.T) *app {
	t.Helper()
	a := &app{t: t, addr: freePort(t), done: make(chan struct{})}
	a.cmd = exec.Command(os.Args[0], "-test.run=^$")
	a.cmd.Env = append(os.Environ(), appEnv+"="+a.addr)
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(a.kill)
	waitUntil(t, 10*time.Second, "application "+a.addr+" answers", func() bool {
		resp, err := http.Get("http://" + a.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return a
}

// kill ends the process with SIGKILL.
func (a *app) kill() {
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Kill()
	<-a.done
}

func (a *app) setMode(mode string) {
	a.t.Helper()
	resp, err := http.Post("http://"+a.addr+"/control/mode/"+mode, "", nil)
	if err != nil {
		a.t.Fatal(err)
	}
	resp.Body.Close()
}

// served is how many calls the application has served.
func (a *app) served() int64 {
	a.t.Helper()
	resp, err := http.Get("http://" + a.addr + "/control/count")
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		a.t.Fatalf("count %q: %v", b, err)
	}
	return n
}
