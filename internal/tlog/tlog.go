// Package tlog adapts zerolog to the Temporal SDK's logger interface.
package tlog

import (
	"fmt"

	"github.com/rs/zerolog"
	"go.temporal.io/sdk/log"
)

// Logger is a Temporal SDK logger writing to zerolog.
type Logger struct{ z zerolog.Logger }

var _ log.Logger = Logger{}

// New wraps z.
func New(z zerolog.Logger) Logger { return Logger{z: z} }

func (l Logger) emit(e *zerolog.Event, msg string, kv []any) {
	for i := 0; i+1 < len(kv); i += 2 {
		if err, ok := kv[i+1].(error); ok {
			e = e.Str(fmt.Sprint(kv[i]), err.Error())
			continue
		}
		e = e.Interface(fmt.Sprint(kv[i]), kv[i+1])
	}
	e.Msg(msg)
}

func (l Logger) Debug(msg string, kv ...any) { l.emit(l.z.Debug(), msg, kv) }
func (l Logger) Info(msg string, kv ...any)  { l.emit(l.z.Info(), msg, kv) }
func (l Logger) Warn(msg string, kv ...any)  { l.emit(l.z.Warn(), msg, kv) }
func (l Logger) Error(msg string, kv ...any) { l.emit(l.z.Error(), msg, kv) }

// With adds key-value context.
func (l Logger) With(kv ...any) log.Logger {
	c := l.z.With()
	for i := 0; i+1 < len(kv); i += 2 {
		c = c.Interface(fmt.Sprint(kv[i]), kv[i+1])
	}
	return Logger{z: c.Logger()}
}
