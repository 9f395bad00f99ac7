package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// alwaysPass are host variables kept even with --cleanenv.
var alwaysPass = map[string]bool{
	"TERM": true, "http_proxy": true, "HTTP_PROXY": true, "https_proxy": true, "HTTPS_PROXY": true,
	"no_proxy": true, "NO_PROXY": true, "all_proxy": true, "ALL_PROXY": true, "ftp_proxy": true, "FTP_PROXY": true,
}

// alwaysOmit are host variables never passed; the value says whether a
// *ENV_ variable may set them inside.
var alwaysOmit = map[string]bool{
	"HOME": false, "PATH": false, "LD_LIBRARY_PATH": true, "PS1": true,
	"APPTAINER_SHELL": false, "APPTAINER_APPNAME": false,
	"SINGULARITY_SHELL": false, "SINGULARITY_APPNAME": false,
}

type envOptions struct {
	cleanenv bool
	noEval   bool
	flagEnv  map[string]string // --env
	flagKeys []string
	homeDest string
	image    string
	command  string // "exec" or "run"
}

// containerEnv computes the environment of the command inside.
func containerEnv(fl *flavor, host []string, o envOptions) ([]string, error) {
	out := map[string]string{}
	user := map[string]string{} // from *ENV_ variables and --env
	var userOrder []string
	setUser := func(k, v string) {
		if _, ok := user[k]; !ok {
			userOrder = append(userOrder, k)
		}
		user[k] = v
	}
	hostMap := map[string]string{}
	for _, kv := range host {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			hostMap[k] = v
		}
	}
	// Apptainer takes SINGULARITYENV_ too, below APPTAINERENV_.
	if fl.legacyPrefix != "" {
		for _, kv := range host {
			k, v, _ := strings.Cut(kv, "=")
			name, ok := strings.CutPrefix(k, fl.legacyPrefix)
			if !ok || name == "" {
				continue
			}
			if _, dup := hostMap[fl.envPrefix+name]; dup {
				continue
			}
			warnf("DEPRECATED USAGE: Forwarding %s as environment variable will not be supported in the future, use %s instead", k, fl.envPrefix+name)
			setUser(name, v)
		}
	}
	for _, kv := range host {
		k, v, _ := strings.Cut(kv, "=")
		if name, ok := strings.CutPrefix(k, fl.envPrefix); ok {
			if name != "" {
				setUser(name, v)
			}
			continue
		}
		if strings.HasPrefix(k, "APPTAINERTEST_") || (fl.legacyPrefix != "" && strings.HasPrefix(k, fl.legacyPrefix)) {
			continue
		}
		if hasAnyPrefix(k, fl.configPrefixes) {
			continue
		}
		if alwaysPass[k] {
			out[k] = v
			continue
		}
		if _, omit := alwaysOmit[k]; omit || o.cleanenv {
			continue
		}
		out[k] = v
	}
	for _, k := range o.flagKeys {
		setUser(k, o.flagEnv[k])
	}
	if o.cleanenv {
		out["LANG"] = "C"
	}

	path := defaultPath
	var prepend, appendPath string
	for _, k := range userOrder {
		v := user[k]
		if !o.noEval {
			if r := strings.IndexAny(v, "$`\\"); r >= 0 {
				return nil, fmt.Errorf("apptainertest double: the value of %s contains %q, which %s %s evaluates without --no-eval; the double does no shell evaluation, so pass --no-eval or avoid the character", k, v[r], fl.name, fl.version)
			}
		}
		switch k {
		case "PATH":
			path = v
			continue
		case "PREPEND_PATH":
			prepend = v
			continue
		case "APPEND_PATH":
			appendPath = v
			continue
		}
		if permitted, ok := alwaysOmit[k]; ok && !permitted {
			warnf("Overriding %s environment variable with %s%s is not permitted", k, fl.envPrefix, k)
			continue
		}
		out[k] = v
	}
	if prepend != "" {
		path = prepend + ":" + path
	}
	if appendPath != "" {
		path = path + ":" + appendPath
	}
	out["PATH"] = path
	out["HOME"] = o.homeDest
	if ld, ok := out["LD_LIBRARY_PATH"]; ok && ld != "" {
		out["LD_LIBRARY_PATH"] = ld + ":/.singularity.d/libs"
	} else {
		out["LD_LIBRARY_PATH"] = "/.singularity.d/libs"
	}
	out[fl.varPrefix+"CONTAINER"] = o.image
	out[fl.varPrefix+"NAME"] = filepath.Base(o.image)
	out[fl.varPrefix+"COMMAND"] = o.command
	out[fl.varPrefix+"ENVIRONMENT"] = "/.singularity.d/env/91-environment.sh"

	env := make([]string, 0, len(out))
	for k, v := range out {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
