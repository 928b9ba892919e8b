// Command bench runs busmesh side by side with its floors, on every broker,
// in one run on one machine, and checks the results against the project's
// targets.
//
// Rows, each measured at every concurrency and body size:
//
//   - direct-http: the load generator calls the echo application itself,
//     the floor of any HTTP sidecar;
//   - raw-<broker>: the broker's own request/reply with the Go client the
//     backend uses (nats.go, amqp091-go, franz-go), against a responder in
//     a process of its own;
//   - mesh-http-<broker>: busmesh, an ambassador and an adapter, two real
//     `busmesh sidecar` processes, with only the broker URL differing;
//   - direct-grpc and mesh-grpc-nats: gRPC unary, direct and through the
//     mesh over NATS;
//   - proxy-chain: two httputil.ReverseProxy processes in front of the
//     application, the shape of a classic HTTP sidecar mesh.
//
// Rows are interleaved: every round runs every configuration of every row,
// about a second each, and the rounds are merged, so drift on a shared
// machine falls on all rows alike. Every latency is recorded; the load
// generator is closed-loop with a fixed number of workers. After the
// rounds, the HTTP sidecars of one broker (-profile-broker, NATS by
// default), or the gRPC ones (-profile-grpc), are CPU-profiled under load
// (-profile). Each broker row also
// reports the broker's server process where it runs on this machine.
//
// Usage:
//
//	go run ./test/bench [-duration 1.2s] [-warmup 150ms] [-rounds 3]
//	    [-concurrency 1,32] [-sizes 128,16384] [-brokers nats,rabbitmq,kafka]
//	    [-out bench-results/latest.md] [-profile 5s] [-profile-broker nats]
//	    [-profile-grpc] [-busmesh BIN] [-v] [-quick]
//
// NATS and RabbitMQ are expected on 127.0.0.1:4222 and :5672
// (BUSMESH_TEST_NATS and BUSMESH_TEST_RABBITMQ override); a broker that is
// not there is skipped with a note. Kafka is an in-memory kfake cluster the
// run starts itself.
//
// The same binary re-executes itself for the processes it needs (the echo
// application, the proxies, the raw responders, the kfake cluster); see
// child.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line settings of a benchmark run.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	concurrency []int
	sizes       []int
	brokers     []string
	out         string
	quick       bool
	profile     time.Duration
	profileOn   string // the broker whose HTTP mesh row is profiled
	profileGRPC bool   // profile the gRPC mesh row instead
	binary      string
	natsAddr    string
	rabbitAddr  string
	verbose     bool
	args        []string // as given, for the report's header
}

// knownBrokers returns the brokers -brokers accepts, in report order.
func knownBrokers() []string { return []string{"nats", "rabbitmq", "kafka"} }

func main() {
	if len(os.Args) > 1 && os.Args[1] == childFlag {
		if err := runChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		interrupted := ctx.Err() != nil
		stop()
		if interrupted {
			fmt.Fprintln(os.Stderr, "bench: interrupted; every process it started is stopped")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// parseOptions reads the flags; -quick replaces the defaults of duration,
// warm-up, rounds and profile, but not values given explicitly.
func parseOptions(args []string) (*options, error) {
	o := &options{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 1200*time.Millisecond, "measured time per row, configuration and round")
	fs.DurationVar(&o.warmup, "warmup", 150*time.Millisecond, "unrecorded load before each measurement")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds over all rows; results are merged")
	conc := fs.String("concurrency", "1,32", "comma-separated numbers of concurrent callers")
	sizes := fs.String("sizes", "128,16384", "comma-separated request body sizes in bytes (the app echoes them)")
	brokers := fs.String("brokers", strings.Join(knownBrokers(), ","), "comma-separated brokers: "+strings.Join(knownBrokers(), ", "))
	fs.StringVar(&o.out, "out", "bench-results/latest.md", "markdown report file (also printed to stdout)")
	fs.BoolVar(&o.quick, "quick", false, "a fast smoke run: one short round")
	fs.DurationVar(&o.profile, "profile", 5*time.Second, "after the rounds, CPU-profile the sidecars this long under the c=max HTTP mesh load of -profile-broker (0: off)")
	fs.StringVar(&o.profileOn, "profile-broker", "", "the broker whose HTTP mesh row -profile profiles (default: nats if among -brokers, else the first)")
	fs.BoolVar(&o.profileGRPC, "profile-grpc", false, "profile the gRPC mesh row ("+rowMeshGRPC+") instead of an HTTP one")
	fs.StringVar(&o.binary, "busmesh", "", "a prebuilt busmesh binary (default: go build ./cmd/busmesh); the report names its commit when it carries a VCS stamp (go build -buildvcs=true)")
	fs.BoolVar(&o.verbose, "v", false, "print a progress line per measurement on stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["duration"] {
			o.duration = 250 * time.Millisecond
		}
		if !set["warmup"] {
			o.warmup = 50 * time.Millisecond
		}
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["profile"] {
			o.profile = 0
		}
	}
	var err error
	if o.concurrency, err = parseInts("concurrency", *conc); err != nil {
		return nil, err
	}
	if o.sizes, err = parseInts("sizes", *sizes); err != nil {
		return nil, err
	}
	for b := range strings.SplitSeq(*brokers, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if !slices.Contains(knownBrokers(), b) {
			return nil, fmt.Errorf("-brokers: %q is not a broker (allowed: %s)", b, strings.Join(knownBrokers(), ", "))
		}
		if !slices.Contains(o.brokers, b) {
			o.brokers = append(o.brokers, b)
		}
	}
	switch {
	case o.profileOn == "" && slices.Contains(o.brokers, "nats"):
		o.profileOn = "nats"
	case o.profileOn == "" && len(o.brokers) > 0:
		o.profileOn = o.brokers[0]
	case o.profileOn != "" && !slices.Contains(o.brokers, o.profileOn):
		return nil, fmt.Errorf("-profile-broker: %q is not among -brokers (%s)", o.profileOn, strings.Join(o.brokers, ", "))
	}
	if o.profileGRPC && !slices.Contains(o.brokers, "nats") {
		return nil, fmt.Errorf("-profile-grpc: %s needs nats among -brokers (%s)", rowMeshGRPC, strings.Join(o.brokers, ", "))
	}
	if o.duration <= 0 || o.rounds < 1 || o.warmup < 0 {
		return nil, errors.New("-duration and -rounds must be positive, -warmup not negative")
	}
	o.natsAddr = envOr("BUSMESH_TEST_NATS", "127.0.0.1:4222")
	o.rabbitAddr = envOr("BUSMESH_TEST_RABBITMQ", "127.0.0.1:5672")
	return o, nil
}

// parseInts parses a comma-separated list of positive integers, sorted and
// without repeats.
func parseInts(name, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-%s: %q is not a positive integer", name, f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-%s: empty list", name)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// run is one benchmark run: set up every row, measure in rounds, report.
// Every process it starts is stopped before it returns, whatever happens.
func run(ctx context.Context, o *options) (err error) {
	started := time.Now()
	info := readMachine()
	if o.binary != "" {
		info.notePrebuilt(o.binary)
	}
	sup, err := newSupervisor()
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, sup.close(ctx.Err() != nil))
	}()

	fmt.Fprintf(os.Stderr, "bench: setting up (%s)\n", strings.Join(o.brokers, ", "))
	env, err := setUp(ctx, o, sup)
	if err != nil {
		return err
	}
	defer env.close()

	res := newResults()
	env.recordIdle(res)
	if err := measure(ctx, o, env, res); err != nil {
		return err
	}
	var prof *profileReport
	if o.profile > 0 {
		prof = env.profile(ctx, o)
	}
	info.loadEnd = readLoadAvg()
	rep := &report{opts: o, machine: info, env: env, res: res, profile: prof, wall: time.Since(started)}
	text := rep.markdown()
	fmt.Print(text)
	if err := writeReport(o.out, text); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s (%s)\n", o.out, time.Since(started).Round(time.Second))
	return nil
}
