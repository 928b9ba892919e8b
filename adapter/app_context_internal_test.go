package adapter

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

type ctxKey struct{}

// TestAppContext: the application's call outlives an abandoned caller by
// appGrace until its answer comes, then ends with the caller; stop ends it
// at once; it carries the caller's values.
func TestAppContext(t *testing.T) {
	ended := func(ctx context.Context) bool { return ctx.Err() != nil }
	t.Run("caller gone before the answer: grace", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			caller, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
			app, call := appContext(caller)
			defer call.stop()
			if app.Value(ctxKey{}) != "v" {
				t.Fatal("the caller's values are lost")
			}
			cancel()
			time.Sleep(appGrace - time.Millisecond)
			synctest.Wait()
			if ended(app) {
				t.Fatal("ended before appGrace")
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
			if !ended(app) {
				t.Fatal("still running appGrace after the caller left")
			}
		})
	})
	t.Run("caller gone after the answer: at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			caller, cancel := context.WithCancel(context.Background())
			app, call := appContext(caller)
			defer call.stop()
			call.answer()
			synctest.Wait()
			if ended(app) {
				t.Fatal("the answer ended the call")
			}
			cancel()
			synctest.Wait()
			if !ended(app) {
				t.Fatal("an answered call outlives its caller")
			}
		})
	})
	t.Run("answer after the caller left: at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			caller, cancel := context.WithCancel(context.Background())
			app, call := appContext(caller)
			defer call.stop()
			cancel()
			synctest.Wait()
			call.answer()
			if !ended(app) {
				t.Fatal("an answer to a gone caller did not end the call")
			}
		})
	})
	t.Run("stop", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			caller, cancel := context.WithCancel(context.Background())
			defer cancel()
			app, call := appContext(caller)
			call.stop()
			if !ended(app) {
				t.Fatal("stop did not end the call")
			}
		})
	})
	t.Run("stop during grace", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			caller, cancel := context.WithCancel(context.Background())
			app, call := appContext(caller)
			cancel()
			synctest.Wait()
			call.stop()
			if !ended(app) {
				t.Fatal("stop did not end the call")
			}
			if call.grace.Stop() {
				t.Fatal("stop left the grace timer running")
			}
		})
	})
}
