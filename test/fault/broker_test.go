package fault

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/busmesh/busmesh/broker/brokertest"
)

// ownBroker is a broker of the case's own, which it may restart: never
// the shared servers.
type ownBroker interface {
	url() string
	// restart takes the broker away for down (as far as the broker allows)
	// and brings it back.
	restart(down time.Duration)
}

func startOwnBroker(t *testing.T, name string) ownBroker {
	t.Helper()
	switch name {
	case "nats":
		return startNATS(t)
	case "rabbitmq":
		return startVhost(t)
	case "kafka":
		return startKfake(t)
	}
	t.Fatalf("no broker %s", name)
	return nil
}

// natsServer is a nats-server process on a port of its own.
type natsServer struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	if _, err := exec.LookPath("nats-server"); err != nil {
		brokertest.Require(t, "nats-server (binary)", "127.0.0.1:1", "apt-get install nats-server")
	}
	n := &natsServer{t: t, addr: freePort(t)}
	n.start()
	t.Cleanup(n.kill)
	return n
}

func (n *natsServer) url() string { return "nats://" + n.addr }

func (n *natsServer) start() {
	n.t.Helper()
	_, port, _ := net.SplitHostPort(n.addr)
	cmd := exec.Command("nats-server", "-a", "127.0.0.1", "-p", port)
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	waitUntil(n.t, 10*time.Second, "nats-server on "+n.addr, func() bool {
		c, err := net.Dial("tcp", n.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (n *natsServer) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	cmd.Process.Kill()
	<-done
}

func (n *natsServer) restart(down time.Duration) {
	n.kill()
	time.Sleep(down)
	n.start()
}

// vhost is a RabbitMQ virtual host and user of the case's own, on the
// shared server: a restart closes its connections only.
type vhost struct {
	t          *testing.T
	name, user string
	host       string
}

func startVhost(t *testing.T) *vhost {
	t.Helper()
	v := &vhost{t: t, host: envOr("BUSMESH_TEST_RABBITMQ", "127.0.0.1:5672")}
	brokertest.Require(t, "rabbitmq", v.host, "rabbitmq-server -detached")
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Fatalf("rabbitmqctl not found: the broker-restart case closes connections with it")
	}
	v.name = fmt.Sprintf("busmesh-fault-%d", time.Now().UnixNano())
	v.user = v.name
	v.ctl("add_vhost", v.name)
	v.ctl("add_user", v.user, v.user)
	v.ctl("set_permissions", "-p", v.name, v.user, ".*", ".*", ".*")
	t.Cleanup(func() {
		v.ctl("delete_user", v.user)
		v.ctl("delete_vhost", v.name)
	})
	return v
}

func (v *vhost) url() string { return "amqp://" + v.user + ":" + v.user + "@" + v.host + "/" + v.name }

func (v *vhost) ctl(args ...string) string {
	v.t.Helper()
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		v.t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// restart closes every connection of the vhost; the sidecars reconnect.
func (v *vhost) restart(time.Duration) {
	out := v.ctl("list_connections", "-q", "--no-table-headers", "pid", "vhost")
	closed := 0
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[1] == v.name {
			v.ctl("close_connection", f[0], "busmesh fault suite: broker restart")
			closed++
		}
	}
	if closed == 0 {
		v.t.Errorf("no connection of vhost %s to close", v.name)
	}
}

// kafkaCluster is a kfake cluster of the case's own, restarted empty on
// the same port.
type kafkaCluster struct {
	t    *testing.T
	port int
	mu   sync.Mutex
	c    *kfake.Cluster
}

func startKfake(t *testing.T) *kafkaCluster {
	t.Helper()
	_, p, _ := net.SplitHostPort(freePort(t))
	port, _ := strconv.Atoi(p)
	k := &kafkaCluster{t: t, port: port}
	k.start()
	t.Cleanup(func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.c.Close()
	})
	return k
}

func (k *kafkaCluster) start() {
	k.t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(k.port))
	if err != nil {
		k.t.Fatal(err)
	}
	k.mu.Lock()
	k.c = c
	k.mu.Unlock()
}

func (k *kafkaCluster) url() string { return "kafka://127.0.0.1:" + strconv.Itoa(k.port) }

func (k *kafkaCluster) restart(down time.Duration) {
	k.mu.Lock()
	k.c.Close()
	k.mu.Unlock()
	time.Sleep(down)
	k.start()
}
