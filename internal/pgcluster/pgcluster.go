// Package pgcluster runs a private PostgreSQL cluster from the machine's own
// server binaries: the embedded default of `countersign serve --dev` and the
// last resort of the test helper. The cluster listens only on a Unix socket in
// its data directory, so it never collides with a server on a TCP port.
package pgcluster

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// ErrNoBinaries is returned when no PostgreSQL server binaries can be found.
var ErrNoBinaries = errors.New("pgcluster: no PostgreSQL server binaries (initdb, pg_ctl) found on PATH, " +
	"in /usr/lib/postgresql/*/bin or in Homebrew's locations; install them " +
	"(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or set DATABASE_URL")

// Superuser is the database superuser that initdb creates.
const Superuser = "postgres"

// socketPathMax is the room a Unix socket path has (sun_path is 108 bytes with
// the terminating NUL on Linux, 104 on macOS).
const socketPathMax = 103

// Options configure Start.
type Options struct {
	// Dir is the data directory; it is created when missing.
	Dir string
	// Durable keeps fsync on. Tests turn it off: their databases are throwaway.
	Durable bool
	// SearchDirs, when non-nil, are the only places binaries are looked for;
	// nil means PATH, then the standard Debian and Homebrew locations.
	SearchDirs []string
	// Logger receives progress lines; nil discards them.
	Logger *slog.Logger
}

// Cluster is a running private cluster.
type Cluster struct {
	dir     string
	bin     string
	cred    *syscall.Credential
	started bool // this process started it, so Stop stops it
}

// Start initialises the cluster in o.Dir when it is new, and starts it unless it
// already runs; a second start reuses it. Concurrent Starts of one directory
// (from several processes) are serialised with a lock file beside it.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if n := len(dir) + len("/.s.PGSQL.5432"); n > socketPathMax {
		return nil, fmt.Errorf("pgcluster: data directory path %q is too long for a Unix socket (%d > %d bytes); use a shorter one", dir, n, socketPathMax)
	}
	bin, err := FindBinaries(o.SearchDirs)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as an unprivileged user that
		// owns the data directory.
		if c.cred, err = unprivileged(); err != nil {
			return nil, err
		}
	}

	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if c.cred != nil {
		if err := reachable(filepath.Dir(dir), c.cred); err != nil {
			return nil, err
		}
	}
	unlock, err := lockFile(dir + ".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()

	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		logger.Info("creating private PostgreSQL cluster", "dir", dir, "bin", bin)
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if c.running(ctx) {
		logger.Info("reusing running private PostgreSQL cluster", "dir", dir)
		return c, nil
	}
	args := []string{"start", "-D", dir, "-w", "-t", "60", "-l", filepath.Join(dir, "server.log"),
		"-o", c.serverOptions(o.Durable)}
	if out, err := c.run(ctx, "pg_ctl", args...); err != nil {
		return nil, fmt.Errorf("pgcluster: pg_ctl start: %w\n%s%s", err, out, tail(filepath.Join(dir, "server.log")))
	}
	c.started = true
	logger.Info("private PostgreSQL cluster started", "dir", dir)
	return c, nil
}

func (c *Cluster) serverOptions(durable bool) string {
	opts := []string{
		"-c listen_addresses=''",
		"-c unix_socket_directories='" + c.dir + "'",
		"-c max_connections=200",
	}
	if !durable {
		opts = append(opts, "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
	}
	return strings.Join(opts, " ")
}

func (c *Cluster) initdb(ctx context.Context) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if entries, _ := os.ReadDir(c.dir); len(entries) > 0 {
		return fmt.Errorf("pgcluster: %s is not empty but holds no cluster; remove it to start afresh", c.dir)
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	out, err := c.run(ctx, "initdb", "-D", c.dir, "-U", Superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions")
	if err != nil {
		return fmt.Errorf("pgcluster: initdb: %w\n%s", err, out)
	}
	return nil
}

func (c *Cluster) running(ctx context.Context) bool {
	_, err := c.run(ctx, "pg_ctl", "status", "-D", c.dir)
	return err == nil
}

// Stop stops the cluster if this process started it.
func (c *Cluster) Stop() error {
	if !c.started {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dir, "-m", "fast", "-w"); err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop: %w\n%s", err, out)
	}
	c.started = false
	return nil
}

// Dir returns the data directory, which is also the socket directory.
func (c *Cluster) Dir() string { return c.dir }

// DSN returns a lib/pq connection string for database name on this cluster.
func (c *Cluster) DSN(name string) string {
	return fmt.Sprintf("host=%s port=5432 user=%s dbname=%s sslmode=disable", quoteDSN(c.dir), Superuser, quoteDSN(name))
}

// EnsureDatabase creates database name unless it exists.
func (c *Cluster) EnsureDatabase(ctx context.Context, name string) error {
	db, err := sql.Open("postgres", c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "42P04" { // duplicate_database: a concurrent start won
			return nil
		}
		return fmt.Errorf("pgcluster: create database: %w", err)
	}
	return nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// A process group of its own: a Ctrl-C meant for the dev server must not
	// reach the postmaster before the server has stopped using it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.cred != nil {
		cmd.SysProcAttr.Credential = c.cred
		cmd.Dir = "/"
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// pg_ctl start leaves the postmaster running with our pipes open unless its
	// output goes to the log file; WaitDelay keeps us from blocking on them.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// FindBinaries returns the directory holding initdb and pg_ctl: the first on
// PATH, else the newest /usr/lib/postgresql/N/bin, else Homebrew's locations.
// Non-nil searchDirs replace that list.
func FindBinaries(searchDirs []string) (string, error) {
	dirs := searchDirs
	if searchDirs == nil {
		dirs = filepath.SplitList(os.Getenv("PATH"))
		debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(debian, func(i, j int) bool { return pgVersion(debian[i]) > pgVersion(debian[j]) })
		dirs = append(dirs, debian...)
		for _, prefix := range []string{"/opt/homebrew", "/usr/local"} {
			brew, _ := filepath.Glob(prefix + "/opt/postgresql*/bin")
			sort.Sort(sort.Reverse(sort.StringSlice(brew)))
			dirs = append(dirs, brew...)
			dirs = append(dirs, prefix+"/bin")
		}
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// unprivileged picks the system user that runs the cluster when we are root.
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("pgcluster: running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")
}

// reachable checks that the unprivileged user can walk down to dir, which
// initdb needs and a root-only home directory (mode 0700) forbids.
func reachable(dir string, cred *syscall.Credential) error {
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		ok := st.Mode&0o001 != 0 || (st.Uid == cred.Uid && st.Mode&0o100 != 0) || (st.Gid == cred.Gid && st.Mode&0o010 != 0)
		if !ok {
			return fmt.Errorf("pgcluster: PostgreSQL refuses to run as root, so it runs as uid %d, which cannot enter %s; "+
				"make it traversable (chmod o+x %s) or choose another --data-dir", cred.Uid, d, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func lockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("pgcluster: lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func tail(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func quoteDSN(s string) string {
	if s != "" && !strings.ContainsAny(s, ` '\`) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}
