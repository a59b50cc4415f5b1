package agent

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"gopkg.in/natefinch/lumberjack.v2"
)

// LogOutput is where the agent logs: stderr (for journald) and, with File set, a rotated
// JSON log file (the seed's agent log).
type LogOutput struct {
	Level      string
	File       string
	MaxSizeMB  int // default 10
	MaxBackups int // default 5
	Stderr     io.Writer
}

// Open returns the logger and a function that closes the log file.
func (o LogOutput) Open() (zerolog.Logger, func() error, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(o.Level))
	if err != nil || o.Level == "" {
		return zerolog.Logger{}, nil, fmt.Errorf("log level %q: use trace, debug, info, warn or error", o.Level)
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	w := io.Writer(zerolog.ConsoleWriter{Out: o.Stderr, TimeFormat: "15:04:05", NoColor: true})
	closer := func() error { return nil }
	if o.File != "" {
		if o.MaxSizeMB == 0 {
			o.MaxSizeMB = 10
		}
		if o.MaxBackups == 0 {
			o.MaxBackups = 5
		}
		f := &lumberjack.Logger{Filename: o.File, MaxSize: o.MaxSizeMB, MaxBackups: o.MaxBackups, Compress: true}
		// Fail now, not at the first log line, when the file cannot be written.
		if _, err := f.Write(nil); err != nil {
			return zerolog.Logger{}, nil, fmt.Errorf("open log file %s: %w", o.File, err)
		}
		w = zerolog.MultiLevelWriter(w, f)
		closer = f.Close
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), closer, nil
}

// jobLogLevel maps a job document's updateAgentLogLevel (the seed's values) to zerolog.
func jobLogLevel(l zerolog.Logger, level string) zerolog.Logger {
	switch level {
	case "":
		return l
	case "NONE":
		return l.Level(zerolog.Disabled)
	case "TRACE":
		return l.Level(zerolog.TraceLevel)
	case "DEBUG", "VERBOSE":
		return l.Level(zerolog.DebugLevel)
	case "INFO":
		return l.Level(zerolog.InfoLevel)
	case "WARN":
		return l.Level(zerolog.WarnLevel)
	case "ERROR":
		return l.Level(zerolog.ErrorLevel)
	case "FATAL":
		return l.Level(zerolog.FatalLevel)
	}
	return l
}
