// Package config resolves settings with one precedence for every command:
// command-line flags, then SPEAR_* environment variables, then a YAML config
// file, then the flags' defaults. A flag named "data-dir" is read from
// SPEAR_DATA_DIR and from the file key "data-dir" (or "data_dir").
package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/spear-go/spear/internal/errdefs"
)

// EnvName is the environment variable for flag name.
func EnvName(flag string) string {
	return "SPEAR_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Resolve fills every flag of fs that was not set on the command line from
// the environment (getenv) or, failing that, from the YAML file at path
// (when path is not empty). Unknown file keys are an error, so typos do not
// pass silently.
func Resolve(fs *pflag.FlagSet, getenv func(string) string, path string) error {
	file := map[string]any{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config file: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return fmt.Errorf("config file %s: %w: %w", path, errdefs.ErrInvalidArgument, err)
		}
	}
	seen := map[string]bool{}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		key := f.Name
		v, inFile := file[key]
		if !inFile {
			key = strings.ReplaceAll(f.Name, "-", "_")
			v, inFile = file[key]
		}
		if inFile {
			seen[key] = true
		}
		if f.Changed {
			return
		}
		var val string
		switch {
		case getenv(EnvName(f.Name)) != "":
			val = getenv(EnvName(f.Name))
		case inFile:
			val = scalar(v)
		default:
			return
		}
		if err := fs.Set(f.Name, val); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", f.Name, val, err))
		}
	})
	for k := range file {
		if !seen[k] {
			errs = append(errs, fmt.Sprintf("unknown key %q in %s", k, path))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %s: %w", strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
	}
	return nil
}

func scalar(v any) string {
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(x)
	}
}
