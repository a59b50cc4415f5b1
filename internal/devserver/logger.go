package devserver

import (
	"fmt"
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
}

func newLogger(z zerolog.Logger, stopping *atomic.Bool) log.Logger {
	return &serverLogger{z: z.With().Str("component", "temporal").Logger(), stopping: stopping}
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
func (l *serverLogger) Fatal(msg string, tags ...tag.Tag) { l.emit(l.z.Fatal(), msg, tags) }

func (l *serverLogger) With(tags ...tag.Tag) log.Logger {
	return &serverLogger{z: l.z, tags: append(append([]tag.Tag{}, l.tags...), tags...), stopping: l.stopping}
}
