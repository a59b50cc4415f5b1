package devserver

import (
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/rs/zerolog"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
)

// serverLogger routes the Temporal server's logs into zerolog. The server is chatty, so only
// warnings and errors pass unless the logger is at debug level.
type serverLogger struct {
	z    zerolog.Logger
	tags []tag.Tag
	// stopping silences the complaints every service makes while its peers shut down.
	stopping *atomic.Bool
	// fatals receives the server's fatal logs once it runs (see Fatal).
	fatals  chan<- string
	running *atomic.Bool
}

// fatal is the panic value of a fatal log while the server is being built.
type fatal string

func newLogger(z zerolog.Logger, stopping, running *atomic.Bool, fatals chan<- string) log.Logger {
	return &serverLogger{z: z.With().Str("component", "temporal").Logger(), stopping: stopping, running: running, fatals: fatals}
}

func (l *serverLogger) emit(e *zerolog.Event, msg string, tags []tag.Tag) {
	if l.stopping.Load() {
		return
	}
	for _, t := range append(l.tags, tags...) {
		e = e.Str(t.Key(), fmt.Sprint(t.Value()))
	}
	e.Msg(msg)
}

func (l *serverLogger) Debug(msg string, tags ...tag.Tag) { l.emit(l.z.Trace(), msg, tags) }
func (l *serverLogger) Info(msg string, tags ...tag.Tag)  { l.emit(l.z.Debug(), msg, tags) }
func (l *serverLogger) Warn(msg string, tags ...tag.Tag)  { l.emit(l.z.Debug(), msg, tags) }
func (l *serverLogger) Error(msg string, tags ...tag.Tag) { l.emit(l.z.Warn(), msg, tags) }
func (l *serverLogger) DPanic(msg string, tags ...tag.Tag) {
	l.emit(l.z.Error(), msg, tags)
}
func (l *serverLogger) Panic(msg string, tags ...tag.Tag) { l.emit(l.z.Error(), msg, tags); panic(msg) }

// Fatal never exits the process (zerolog's Fatal would, and so would the server's own
// logger): otaflow embeds the server beside the broker and the jobs service, whose state must
// be closed cleanly. While the server is being built it panics with a fatal, which Start turns
// into an error; once the server runs, it reports the failure through Server.Failed and ends
// only the goroutine that cannot go on.
func (l *serverLogger) Fatal(msg string, tags ...tag.Tag) {
	l.emit(l.z.Error(), msg, tags)
	for _, t := range tags {
		if t.Key() == "error" {
			msg += ": " + fmt.Sprint(t.Value())
		}
	}
	if !l.running.Load() {
		panic(fatal(msg))
	}
	select {
	case l.fatals <- msg:
	default:
	}
	runtime.Goexit()
}

func (l *serverLogger) With(tags ...tag.Tag) log.Logger {
	c := *l
	c.tags = append(append([]tag.Tag{}, l.tags...), tags...)
	return &c
}
