package browser

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// The desktop's notification service, so that a test can click a
// notification. DevTools can show a service worker a push but cannot click
// what it shows, and a notificationclick a script dispatches is untrusted:
// clients.openWindow refuses it ("Not allowed to open a window"). Chromium
// on Linux shows web notifications through the freedesktop.org
// Notifications interface on the D-Bus session bus, and a click comes back
// from it as the ActionInvoked signal, which Chromium answers with the real
// notificationclick.

const (
	notificationsName  = "org.freedesktop.Notifications"
	notificationsPath  = dbus.ObjectPath("/org/freedesktop/Notifications")
	notificationsIface = "org.freedesktop.Notifications"
)

// NotificationServer is a desktop notification service (the freedesktop.org
// Notifications interface) on a private D-Bus session bus: give it to New
// with WithNotificationServer and the browser shows its notifications here.
// It stops when the test ends.
type NotificationServer struct {
	address string // the bus, as DBUS_SESSION_BUS_ADDRESS
	conn    *dbus.Conn
	timeout time.Duration
	shown   chan Notification
	closed  chan uint32
	done    chan struct{}
	lastID  uint32 // serve's
}

// Notification is one notification the browser asked the desktop to show.
type Notification struct {
	ID      uint32
	App     string   // "Chromium"
	Summary string   // the notification's title
	Body    string   // Chromium puts the page's origin and a blank line before the body
	Actions []string // key, label pairs; "default" is a click on the notification itself
}

// dbusDaemon is the bus daemon, from Debian's package dbus-daemon.
const dbusDaemon = "dbus-daemon"

// NewNotificationServer starts a session bus (dbus-daemon) of its own and
// the notification service on it.
func NewNotificationServer(t testing.TB) *NotificationServer {
	t.Helper()
	path, err := exec.LookPath(dbusDaemon)
	if err != nil {
		t.Fatalf("no %s: install Debian's dbus-daemon (apt-get install dbus-daemon; .ci/run does)", dbusDaemon)
	}
	// A socket path has at most 107 bytes: a short directory, not t.TempDir.
	dir, err := os.MkdirTemp("", "bus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	config := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(config, []byte(busConfig(filepath.Join(dir, "bus"))), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--config-file="+config, "--nofork", "--nopidfile", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	var address string
	select {
	case address = <-line:
	case <-time.After(30 * time.Second):
	}
	if address == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("%s printed no address within 30 s: %s", path, stderr.String())
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	// Connect's Hello waits for the bus without a bound of its own.
	type connected struct {
		conn *dbus.Conn
		err  error
	}
	dialed := make(chan connected, 1)
	go func() {
		c, err := dbus.Connect(address)
		dialed <- connected{c, err}
	}()
	var conn *dbus.Conn
	select {
	case c := <-dialed:
		if c.err != nil {
			t.Fatalf("connecting to the test bus: %v", c.err)
		}
		conn = c.conn
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill() // which ends the Connect
		t.Fatalf("the test bus did not answer within 30 s")
	}
	t.Cleanup(func() { _ = conn.Close() })
	if r, err := conn.RequestName(notificationsName, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning %s on the test bus: %v %v", notificationsName, r, err)
	}
	s := &NotificationServer{address: address, conn: conn, timeout: 15 * time.Second,
		shown: make(chan Notification, 16), closed: make(chan uint32, 16), done: make(chan struct{})}
	// The service reads its calls itself (not through Export) so that it
	// announces a notification only once the reply with its id is on the
	// bus: a click signalled before that reply is one Chromium drops.
	in := make(chan *dbus.Message, 64)
	conn.Eavesdrop(in)
	go s.serve(in)
	t.Cleanup(func() { close(s.done) })
	return s
}

// busConfig is a session bus on socket that starts no services of its own
// (Chromium asks for the accessibility bus, say): only the test's
// notification service is on it.
func busConfig(socket string) string {
	return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=` + socket + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`
}

// WithNotificationServer makes the browser show notifications through s.
func WithNotificationServer(s *NotificationServer) Option {
	return func(c *browserConfig) { c.env = append(c.env, "DBUS_SESSION_BUS_ADDRESS="+s.address) }
}

func (s *NotificationServer) serve(in <-chan *dbus.Message) {
	for {
		var m *dbus.Message
		select {
		case <-s.done:
			return
		case m = <-in:
		}
		if m.Type != dbus.TypeMethodCall {
			continue
		}
		iface, _ := m.Headers[dbus.FieldInterface].Value().(string)
		member, _ := m.Headers[dbus.FieldMember].Value().(string)
		if iface != notificationsIface {
			s.fail(m, "org.freedesktop.DBus.Error.UnknownInterface", "no interface "+iface)
			continue
		}
		switch member {
		case "GetCapabilities":
			s.reply(m, []string{"actions", "body"})
		case "GetServerInformation":
			s.reply(m, "countersign-test", "countersign", "1", "1.2")
		case "Notify":
			n, ok := notificationOf(m.Body)
			if !ok {
				s.fail(m, "org.freedesktop.DBus.Error.InvalidArgs", "Notify takes susssasa{sv}i")
				continue
			}
			s.lastID++
			n.ID = s.lastID
			if s.reply(m, n.ID) {
				announce(s, s.shown, n)
			}
		case "CloseNotification":
			var id uint32
			if len(m.Body) == 1 {
				id, _ = m.Body[0].(uint32)
			}
			if s.reply(m) {
				announce(s, s.closed, id)
			}
		default:
			s.fail(m, "org.freedesktop.DBus.Error.UnknownMethod", "no method "+member)
		}
	}
}

// announce passes v to the test, unless the test is over.
func announce[T any](s *NotificationServer, ch chan<- T, v T) {
	select {
	case ch <- v:
	case <-s.done:
	}
}

// notificationOf reads Notify's arguments (app_name, replaces_id,
// app_icon, summary, body, actions, hints, expire_timeout).
func notificationOf(args []any) (Notification, bool) {
	if len(args) != 8 {
		return Notification{}, false
	}
	app, ok1 := args[0].(string)
	summary, ok2 := args[3].(string)
	body, ok3 := args[4].(string)
	actions, ok4 := args[5].([]string)
	return Notification{App: app, Summary: summary, Body: body, Actions: actions}, ok1 && ok2 && ok3 && ok4
}

// reply answers call m with values; it returns once the reply is written.
func (s *NotificationServer) reply(m *dbus.Message, values ...any) bool {
	r := &dbus.Message{Type: dbus.TypeMethodReply, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldReplySerial: dbus.MakeVariant(m.Serial()),
	}, Body: values}
	if sender, ok := m.Headers[dbus.FieldSender]; ok {
		r.Headers[dbus.FieldDestination] = sender
	}
	if len(values) > 0 {
		r.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(values...))
	}
	return s.conn.Send(r, nil).Err == nil
}

func (s *NotificationServer) fail(m *dbus.Message, name, text string) {
	r := &dbus.Message{Type: dbus.TypeError, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldReplySerial: dbus.MakeVariant(m.Serial()),
		dbus.FieldErrorName:   dbus.MakeVariant(name),
		dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(text)),
	}, Body: []any{text}}
	if sender, ok := m.Headers[dbus.FieldSender]; ok {
		r.Headers[dbus.FieldDestination] = sender
	}
	_ = s.conn.Send(r, nil)
}

// Next waits for the next notification the browser shows.
func (s *NotificationServer) Next(t testing.TB) Notification {
	t.Helper()
	select {
	case n := <-s.shown:
		return n
	case <-time.After(s.timeout):
		t.Fatalf("the browser showed no notification within %s", s.timeout)
		return Notification{}
	}
}

// Click clicks n, as a person clicking the notification's body (the
// "default" action) would.
func (s *NotificationServer) Click(t testing.TB, n Notification) {
	t.Helper()
	if err := s.conn.Emit(notificationsPath, notificationsIface+".ActionInvoked", n.ID, "default"); err != nil {
		t.Fatalf("clicking notification %d: %v", n.ID, err)
	}
}

// WaitClosed waits until the browser takes n off the screen.
func (s *NotificationServer) WaitClosed(t testing.TB, n Notification) {
	t.Helper()
	deadline := time.After(s.timeout)
	for {
		select {
		case id := <-s.closed:
			if id == n.ID {
				return
			}
		case <-deadline:
			t.Fatalf("notification %d (%q) still shown after %s", n.ID, n.Summary, s.timeout)
		}
	}
}
