// Package fault is busmesh's fault suite: real sidecar processes in front
// of real application processes, three instances of a service behind
// adapters, steady load from 8 callers through one ambassador, and one
// fault at a time (a process killed, a rolling restart, the broker
// restarted, an instance slow or failing), on NATS, RabbitMQ and Kafka.
// Each case prints its counts. `make fault` runs it longer.
package fault

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// appEnv makes the test binary an application process (see app_test.go)
// listening on the address it names.
const appEnv = "BUSMESH_FAULT_APP"

var (
	// duration is how long a case keeps its load on after the fault.
	duration = flag.Duration("fault.duration", 3*time.Second, "load after each fault (make fault: longer)")
	// kafkaRestart runs the broker-restart case on Kafka (kfake restarted
	// empty). It runs by default since broker/kafka recreates its topics;
	// make fault still names it.
	kafkaRestart = flag.Bool("fault.kafka-restart", true, "run the Kafka broker-restart case (kfake restarted empty); =false skips it")
	// binary is the busmesh binary TestMain builds (without the race
	// detector: the figures are of the sidecars as they ship).
	binary string
	// kafkaURL is the suite's in-process kfake cluster, for the cases
	// that do not restart it.
	kafkaURL string
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(appEnv); addr != "" {
		serveApp(addr) // never returns
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("fault: skipped under -short")
		return 0
	}
	dir, err := os.MkdirTemp("", "busmesh-fault-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "busmesh")
	cmd := exec.Command("go", "build", "-o", binary, "../../cmd/busmesh")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "fault: build busmesh:", err)
		return 1
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault: kfake:", err)
		return 1
	}
	defer c.Close()
	kafkaURL = "kafka://" + strings.Join(c.ListenAddrs(), ",")
	return m.Run()
}
