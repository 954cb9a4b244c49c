package weir

// Log writes one line to the host's log at level (LogError ... LogTrace),
// under the plugin's name, topic and partition. The line should be UTF-8.
// The last line logged at LogError during a call that fails is the reason
// the host reports. Lines written to stdout and stderr reach the host's log
// too (at info and warn), but never count as that reason.
func Log(level int32, line string) { hostLog(level, line) }

// Error logs line at error level.
func Error(line string) { hostLog(LogError, line) }

// Warn logs line at warn level.
func Warn(line string) { hostLog(LogWarn, line) }

// Info logs line at info level.
func Info(line string) { hostLog(LogInfo, line) }

// Debug logs line at debug level.
func Debug(line string) { hostLog(LogDebug, line) }
