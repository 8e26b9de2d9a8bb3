// Package snapshottersuite drives containerd's snapshotter conformance suite
// (snapshots/testsuite.SnapshotterSuite) against a proxy snapshotter: a
// daemon serving containerd's Snapshots gRPC API on a unix socket, reached
// through containerd's own proxy client (snapshots/proxy).
//
// Every test case gets a fresh daemon on a fresh root: the SnapshotterFunc
// starts it with its root and socket under the case's root directory, waits
// until the socket answers a Stat, and hands back the proxy client and a
// cleanup that closes the client and stops the daemon (SIGTERM, then
// SIGKILL after -stop-timeout).
//
// Built with `go test -c -o snapshotter-suite`; see ../README.md. Run as
// root (the suite mounts).
package snapshottersuite

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	flagDaemon = flag.String("daemon", os.Getenv("SNAPSHOTTER_SUITE_DAEMON"),
		"server binary to start for each case: snapledgerd or snapshotter-serve (env SNAPSHOTTER_SUITE_DAEMON)")
	flagKind = flag.String("daemon-kind", os.Getenv("SNAPSHOTTER_SUITE_DAEMON_KIND"),
		"command-line dialect of -daemon: snapledgerd (--root/--address) or serve (-root/-address);\n"+
			"default: serve if the binary is named snapshotter-serve*, else snapledgerd (env SNAPSHOTTER_SUITE_DAEMON_KIND)")
	flagArgs = flag.String("daemon-args", os.Getenv("SNAPSHOTTER_SUITE_DAEMON_ARGS"),
		"extra arguments for the daemon, split on blanks, e.g. \"--backend native\" or \"-type overlayfs\" (env SNAPSHOTTER_SUITE_DAEMON_ARGS)")
	flagUmask = flag.String("daemon-umask", "",
		"octal umask for the daemon (default: inherit the suite's, which it clears to 0)")
	flagName = flag.String("name", "",
		"snapshotter name in the suite's temp dirs and on the proxy calls (default: the daemon's base name)")
	flagStart = flag.Duration("start-timeout", 30*time.Second, "how long a daemon may take to answer on its socket")
	flagStop  = flag.Duration("stop-timeout", 15*time.Second, "how long a daemon may take to exit after SIGTERM before SIGKILL")
	flagLog   = flag.String("daemon-log", "problems",
		"when to copy a daemon's output into its case's log: problems (it failed to start, exited on its own, exited non-zero or needed SIGKILL, or said warn/error), all, or none")
)

// live holds the daemons running now, so that an interrupted run stops them.
var (
	liveMu sync.Mutex
	live   = map[*daemon]struct{}{}
)

type daemon struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when cmd.Wait returned
	waitErr error
}

func daemonKind() string {
	if *flagKind != "" {
		return *flagKind
	}
	if strings.HasPrefix(filepath.Base(*flagDaemon), "snapshotter-serve") {
		return "serve"
	}
	return "snapledgerd"
}

func snapshotterName() string {
	if *flagName != "" {
		return *flagName
	}
	return filepath.Base(*flagDaemon)
}

// daemonArgv is the command line for one case: root and socket in the
// daemon's own dialect, then the extra arguments.
func daemonArgv(stateDir, socket string) ([]string, error) {
	var argv []string
	switch daemonKind() {
	case "snapledgerd":
		argv = []string{*flagDaemon, "--root", stateDir, "--address", socket}
	case "serve":
		argv = []string{*flagDaemon, "-root", stateDir, "-address", socket}
	default:
		return nil, fmt.Errorf("-daemon-kind %q: want snapledgerd or serve", *flagKind)
	}
	argv = append(argv, strings.Fields(*flagArgs)...)
	if *flagUmask != "" {
		// sh sets the umask and execs the daemon: same pid, same signals.
		argv = append([]string{"/bin/sh", "-c", "umask " + *flagUmask + ` && exec "$0" "$@"`}, argv...)
	}
	return argv, nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no daemon output: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func startDaemon(root string) (*daemon, error) {
	argv, err := daemonArgv(filepath.Join(root, "sl"), filepath.Join(root, "sl.sock"))
	if err != nil {
		return nil, err
	}
	// The output lives beside root (not in it), so it survives the daemon
	// and goes with the case's temp dir.
	logPath := filepath.Join(filepath.Dir(root), "daemon.log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	// If this process dies without cleaning up, the daemon goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %q: %w", argv, err)
	}
	d := &daemon{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	liveMu.Lock()
	live[d] = struct{}{}
	liveMu.Unlock()
	go func() {
		d.waitErr = cmd.Wait()
		liveMu.Lock()
		delete(live, d)
		liveMu.Unlock()
		close(d.exited)
	}()
	return d, nil
}

func (d *daemon) hasExited() bool {
	select {
	case <-d.exited:
		return true
	default:
		return false
	}
}

// stop SIGTERMs the daemon and waits for it, SIGKILLing it after timeout.
// It says how the daemon ended; problem is true unless it exited 0 on the
// SIGTERM.
func (d *daemon) stop(timeout time.Duration) (how string, problem bool) {
	if d.hasExited() {
		return fmt.Sprintf("daemon had already exited (%v) before the case ended", d.waitErr), true
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if d.waitErr != nil {
			return fmt.Sprintf("daemon exited on SIGTERM with %v", d.waitErr), true
		}
		return "daemon exited 0 on SIGTERM", false
	case <-time.After(timeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Sprintf("daemon still running %v after SIGTERM: SIGKILLed", timeout), true
	}
}

// dialReady connects to socket and makes one Stat call; the daemon is ready
// when that call is answered: OK or NotFound (the key does not exist).
func dialReady(ctx context.Context, socket string, perTry time.Duration) (*grpc.ClientConn, error) {
	dctx, cancel := context.WithTimeout(ctx, perTry)
	defer cancel()
	conn, err := grpc.DialContext(dctx, "passthrough:///"+socket,
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		return nil, err
	}
	_, err = snapshotsapi.NewSnapshotsClient(conn).Stat(dctx, &snapshotsapi.StatSnapshotRequest{
		Snapshotter: snapshotterName(),
		Key:         "snapshotter-suite-readiness-probe",
	})
	if err == nil || status.Code(err) == codes.NotFound {
		return conn, nil
	}
	conn.Close()
	return nil, err
}

// newSnapshotter is the suite's SnapshotterFunc.
func newSnapshotter(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	d, err := startDaemon(root)
	if err != nil {
		return nil, nil, err
	}
	socket := filepath.Join(root, "sl.sock")
	forward := func(why string) {
		log.G(ctx).Infof("%s; daemon output:\n%s", why, tail(d.logPath, 60))
	}

	// Wait until the socket answers, the daemon exits, or the time is up.
	probeCtx := namespaces.WithNamespace(context.Background(), "testsuite")
	deadline := time.Now().Add(*flagStart)
	var conn *grpc.ClientConn
	var lastErr error = errors.New("socket never appeared")
	for conn == nil {
		if d.hasExited() {
			return nil, nil, fmt.Errorf("daemon exited before answering on %s (%v); its output:\n%s",
				socket, d.waitErr, tail(d.logPath, 40))
		}
		if time.Now().After(deadline) {
			how, _ := d.stop(*flagStop)
			return nil, nil, fmt.Errorf("daemon did not answer on %s within %v (last: %v; %s); its output:\n%s",
				socket, *flagStart, lastErr, how, tail(d.logPath, 40))
		}
		if _, err := os.Stat(socket); err == nil {
			conn, lastErr = dialReady(probeCtx, socket, time.Second)
		}
		if conn == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}

	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotterName())
	cleanup := func() error {
		// The case is over (the suite runs this deferred, after the case's
		// own defers). A case that failed half-way can leave its mounts in
		// the temp dir the suite removes next: take them away first.
		for _, m := range leftoverMounts(filepath.Dir(root)) {
			err := unix.Unmount(m, unix.MNT_DETACH)
			log.G(ctx).Infof("unmounted %s, which the case left mounted (err: %v)", m, err)
		}
		cerr := conn.Close()
		how, problem := d.stop(*flagStop)
		switch {
		case *flagLog == "all":
			forward(how)
		case *flagLog == "none":
		case problem:
			forward(how)
		default:
			if saysTrouble(d.logPath) {
				forward(how + ", but warned or erred")
			}
		}
		if problem {
			// A daemon that died during the case, did not stop on SIGTERM
			// or exited non-zero fails the case even if every call passed.
			return errors.New(how)
		}
		return cerr
	}
	return sn, cleanup, nil
}

// leftoverMounts lists the mount points under dir, deepest first.
func leftoverMounts(dir string) []string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil
	}
	var mps []string
	for _, i := range infos {
		if i.Mountpoint != dir {
			mps = append(mps, i.Mountpoint)
		}
	}
	sort.Slice(mps, func(a, b int) bool { return len(mps[a]) > len(mps[b]) })
	return mps
}

var troubleRE = regexp.MustCompile(`(?i)\b(warn|warning|error|fatal|panic)\b`)

func saysTrouble(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && troubleRE.Match(b)
}

func TestSnapshotterSuite(t *testing.T) {
	testsuite.SnapshotterSuite(t, snapshotterName(), newSnapshotter)
}

// result lines of `go test -v`, e.g. "    --- PASS: TestSnapshotterSuite/Basic (0.05s)"
var resultRE = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (TestSnapshotterSuite/\S+) \(([0-9.]+s)\)`)

type caseResult struct{ verdict, name, took string }

// TestMain checks the set-up, runs the suite verbosely with its output
// teed through a scanner that notes each case's verdict, and ends with a
// summary: one line per case, then "N passed, N failed, N skipped".
func TestMain(m *testing.M) {
	flag.Parse()
	if *flagDaemon == "" {
		fmt.Fprintln(os.Stderr, "snapshotter-suite: -daemon PATH (or SNAPSHOTTER_SUITE_DAEMON) is required")
		os.Exit(2)
	}
	if st, err := os.Stat(*flagDaemon); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		fmt.Fprintf(os.Stderr, "snapshotter-suite: -daemon %s: not an executable file\n", *flagDaemon)
		os.Exit(2)
	}
	if _, err := daemonArgv("x", "y"); err != nil {
		fmt.Fprintf(os.Stderr, "snapshotter-suite: %v\n", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "SKIP: snapshotter-suite needs root (the suite mounts snapshots)")
		os.Exit(77)
	}
	_ = flag.Set("test.v", "true")
	fmt.Printf("snapshotter-suite: %s (%s dialect) %s\n", *flagDaemon, daemonKind(), *flagArgs)

	// An interrupted run stops its daemons before going.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		liveMu.Lock()
		for d := range live {
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
		}
		liveMu.Unlock()
		time.Sleep(2 * time.Second)
		liveMu.Lock()
		for d := range live {
			_ = d.cmd.Process.Kill()
		}
		liveMu.Unlock()
		fmt.Fprintf(os.Stderr, "snapshotter-suite: %v: stopped the daemons, exiting\n", sig)
		os.Exit(130)
	}()

	realStdout := os.Stdout
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var results []caseResult
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(io.TeeReader(r, realStdout))
		sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
		for sc.Scan() {
			if mm := resultRE.FindStringSubmatch(sc.Text()); mm != nil {
				results = append(results, caseResult{mm[1], strings.TrimPrefix(mm[2], "TestSnapshotterSuite/"), mm[3]})
			}
		}
		_, _ = io.Copy(realStdout, r) // after an over-long line: pass the rest through
	}()
	os.Stdout = w
	start := time.Now()
	code := m.Run()
	os.Stdout = realStdout
	w.Close()
	<-scanned

	sort.Slice(results, func(i, j int) bool { return results[i].name < results[j].name })
	counts := map[string]int{}
	fmt.Println("\nsnapshotter-suite summary:")
	for _, r := range results {
		fmt.Printf("  %s  %-30s %s\n", r.verdict, r.name, r.took)
		counts[r.verdict]++
	}
	fmt.Printf("suite took %.1fs\n", time.Since(start).Seconds())
	fmt.Printf("%d passed, %d failed, %d skipped\n", counts["PASS"], counts["FAIL"], counts["SKIP"])
	if code == 0 && (counts["FAIL"] > 0 || len(results) == 0) {
		code = 1
	}
	os.Exit(code)
}
