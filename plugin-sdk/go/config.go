package weir

import (
	"errors"
	"iter"
	"strconv"
)

// Config is the plugin's own config table, the job's [pipeline.config],
// as the host passes it to weir_init. Nested tables arrive with dotted keys
// (rule.min). Every value is text: TOML strings without their quotes, other
// values as TOML writes them (3, 0.5, true, ["a", "b"]).
type Config struct {
	entries []configEntry
}

type configEntry struct {
	key, value string
}

// decodeConfig decodes a config block: count:u32, then count entries laid
// out like header entries.
func decodeConfig(buf []byte) (Config, error) {
	if len(buf) < 4 {
		return Config{}, errTruncated
	}
	count := le32(buf)
	rest := buf[4:]
	if err := checkEntries(rest, count, false); err != nil {
		return Config{}, err
	}
	entries := make([]configEntry, 0, count)
	for range count {
		h, next, _ := splitEntry(rest)
		entries = append(entries, configEntry{key: string(h.Name), value: string(h.Value)})
		rest = next
	}
	return Config{entries: entries}, nil
}

// Len returns the number of entries.
func (c Config) Len() int { return len(c.entries) }

// Get returns the value of key and whether it is set.
func (c Config) Get(key string) (string, bool) {
	for _, e := range c.entries {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

// Require returns the value of key, or an error naming the missing key.
func (c Config) Require(key string) (string, error) {
	v, ok := c.Get(key)
	if !ok {
		return "", errors.New("config `" + key + "` is required")
	}
	return v, nil
}

// Int returns the value of key as an integer, or def when it is unset.
func (c Config) Int(key string, def int64) (int64, error) {
	v, ok := c.Get(key)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return def, badValue(key, v, err)
	}
	return n, nil
}

// Float returns the value of key as a float, or def when it is unset.
func (c Config) Float(key string, def float64) (float64, error) {
	v, ok := c.Get(key)
	if !ok {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return def, badValue(key, v, err)
	}
	return f, nil
}

// Bool returns the value of key (true or false, as TOML writes them) as a
// bool, or def when it is unset.
func (c Config) Bool(key string, def bool) (bool, error) {
	v, ok := c.Get(key)
	if !ok {
		return def, nil
	}
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return def, badValue(key, v, errors.New("not true or false"))
}

// All iterates the entries as key, value pairs, in the order the host sent
// them (do not depend on it).
func (c Config) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, e := range c.entries {
			if !yield(e.key, e.value) {
				return
			}
		}
	}
}

// badValue is the error for a config value that does not parse.
func badValue(key, value string, err error) error {
	var num *strconv.NumError
	if errors.As(err, &num) {
		err = num.Err
	}
	return errors.New("config `" + key + "` = " + strconv.Quote(value) + ": " + err.Error())
}
