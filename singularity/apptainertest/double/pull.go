//lint:file-ignore ST1005 the double prints the real tool's messages, capitals included

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// registryName is the file name under $APPTAINERTEST_REGISTRY that holds
// ref: "://", "/" and ":" replaced by "_", plus ".sif".
func registryName(ref string) string {
	return strings.NewReplacer("://", "_", "/", "_", ":", "_").Replace(ref) + ".sif"
}

// registryLookup returns the registry file for ref, or the error the real
// tool reports when it cannot reach the reference's registry offline.
func registryLookup(fl *flavor, transport, ref string) (string, error) {
	switch transport {
	case "docker", "oras", "library", "shub", "http", "https":
	default:
		return "", fmt.Errorf("apptainertest double: the %s:// transport is not emulated", transport)
	}
	if dir := os.Getenv("APPTAINERTEST_REGISTRY"); dir != "" {
		p := filepath.Join(dir, registryName(ref))
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", offlineError(fl, transport, ref)
}

func offlineError(fl *flavor, transport, ref string) error {
	rest := strings.SplitN(ref, "://", 2)[1]
	host := registryHost(transport, rest)
	dns := fmt.Sprintf("dial tcp: lookup %s: no such host", host)
	switch transport {
	case "docker":
		return fmt.Errorf("While making image from oci registry: error fetching image to cache: failed to get checksum for %s: error pinging docker registry %s: Get \"https://%s/v2/\": %s", ref, host, host, dns)
	case "oras":
		return fmt.Errorf("While pulling image from oci registry: failed to pull image: unable to fetch image %s: Get \"https://%s/v2/\": %s", ref, host, dns)
	case "library":
		if fl.name == "apptainer" {
			return errors.New("Unable to get library client configuration: remote has no library client (see https://apptainer.org/docs/user/latest/endpoint.html#no-default-remote)")
		}
		return fmt.Errorf("While pulling library image: error fetching image: Get \"https://%s/v1/images/%s\": %s", host, strings.TrimPrefix(rest, "/"), dns)
	case "shub":
		return fmt.Errorf("While pulling shub image: failed to get manifest for: %s: Get \"https://%s/api/container/%s\": %s", ref, host, rest, dns)
	default:
		return fmt.Errorf("While pulling from %s: Get %q: %s", ref, ref, dns)
	}
}

// registryHost is the host the real tool would contact for a reference.
func registryHost(transport, rest string) string {
	first, _, hasSlash := strings.Cut(rest, "/")
	switch transport {
	case "docker":
		if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
			return first
		}
		return "registry-1.docker.io"
	case "oras":
		return first
	case "library":
		if strings.HasPrefix(rest, "/") {
			return "library.sylabs.io"
		}
		if hasSlash && strings.Contains(first, ".") {
			return first
		}
		return "library.sylabs.io"
	case "shub":
		return "singularity-hub.org"
	default:
		return first
	}
}

var pullFlags = []flagDef{
	{name: "force", short: 'F', kind: boolFlag, env: []string{"FORCE"}, usage: "overwrite an image file if it exists", emulated: true},
	{name: "dir", kind: stringFlag, env: []string{"PULLDIR", "PULLFOLDER"}, usage: "download images to the specific directory", emulated: true},
	{name: "disable-cache", kind: boolFlag, env: []string{"DISABLE_CACHE"}, usage: "do not use or create cached images/blobs", inert: true},
	{name: "arch", kind: stringFlag, env: []string{"ARCH"}, usage: "architecture to pull from library", emulated: true},
	{name: "library", kind: stringFlag, env: []string{"LIBRARY"}, usage: "download images from the provided library", inert: true},
	{name: "no-https", kind: boolFlag, env: []string{"NOHTTPS", "NO_HTTPS"}, usage: "use http instead of https for docker:// oras:// and library://<hostname>/... URIs", inert: true},
	{name: "nohttps", kind: boolFlag, usage: "use http instead of https (deprecated)", inert: true},
	{name: "no-cleanup", kind: boolFlag, env: []string{"NO_CLEANUP"}, usage: "do NOT clean up bundle after failed build, can be helpful for debugging", inert: true},
	{name: "docker-login", kind: boolFlag, usage: "login to a Docker Repository interactively", inert: true},
	{name: "sandbox", kind: boolFlag, usage: "build image as sandbox format (chroot directory structure)"},
	{name: "oci", kind: boolFlag, usage: "pull to an OCI-SIF (OCI sources only)", only: "singularity-ce"},
}

func cmdPull(fl *flavor, args []string) int {
	fs := newFlagSet("pull", fl, pullFlags)
	rest, err := fs.parse(args)
	if err == errHelp {
		printCmdHelp(fl, "pull", fs)
		return 0
	}
	if err != nil {
		return usageError(fl, "pull", fs, err, true)
	}
	switch {
	case len(rest) == 0:
		return usageError(fl, "pull", fs, errors.New("requires at least 1 arg(s), only received 0"), false)
	case len(rest) > 2:
		return usageError(fl, "pull", fs, fmt.Errorf("accepts between 1 and 2 arg(s), received %d", len(rest)), false)
	}
	if err := fs.applyEnv(fl); err != nil {
		fatalf("%s", err)
	}
	if err := fs.emulationCheck(); err != nil {
		fatalf("%s", err)
	}
	ref := rest[len(rest)-1]
	transport, name, ok := strings.Cut(ref, "://")
	if !ok {
		// The real tool defaults to library:// for a bare name.
		transport, name, ref = "library", ref, "library://"+ref
	}
	dest := ""
	if len(rest) == 2 {
		dest = rest[0]
	} else {
		dest = defaultPullName(name)
	}
	if d := fs.str("dir"); d != "" {
		dest = filepath.Join(d, dest)
	}
	if a := fs.str("arch"); a != "" && a != goarch() {
		fatalf("apptainertest double: pulling for architecture %s is not emulated", a)
	}
	if _, err := os.Stat(dest); err == nil && !fs.bool("force") {
		fatalf("Image file already exists: %q - will not overwrite", dest)
	}
	src, err := registryLookup(fl, transport, ref)
	if err != nil {
		fatalf("%s", err)
	}
	switch transport {
	case "docker":
		infof("Converting OCI blobs to SIF format")
	case "library":
		infof("Downloading library image")
	default:
		infof("Downloading %s image", transport)
	}
	if err := copyFile(src, dest); err != nil {
		fatalf("While pulling %s: %s", ref, err)
	}
	return 0
}

// defaultPullName is the real tool's default output name: the last path
// element and the tag, "<name>_<tag>.sif".
func defaultPullName(name string) string {
	base := path.Base(strings.TrimSuffix(name, "/"))
	base, _, _ = strings.Cut(base, "@")
	n, tag, ok := strings.Cut(base, ":")
	if !ok || tag == "" {
		tag = "latest"
	}
	return n + "_" + tag + ".sif"
}

func copyFile(src, dest string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dest)
}

var inspectFlags = []flagDef{
	{name: "labels", short: 'l', kind: boolFlag, usage: "show the labels associated with the image (default)", emulated: true},
	{name: "deffile", short: 'd', kind: boolFlag, usage: "show the Apptainer recipe file that was used to generate the image", emulated: true},
	{name: "json", short: 'j', kind: boolFlag, usage: "print structured json instead of sections", emulated: true},
	{name: "runscript", short: 'r', kind: boolFlag, usage: "show the runscript for the image"},
	{name: "environment", short: 'e', kind: boolFlag, usage: "show the environment settings for the image"},
	{name: "helpfile", short: 'H', kind: boolFlag, usage: "inspect the runscript helpfile, if it exists"},
	{name: "test", short: 't', kind: boolFlag, usage: "show the test script for the image"},
	{name: "app", kind: stringFlag, usage: "inspect a specific app"},
	{name: "list-apps", kind: boolFlag, usage: "list all apps in a container"},
	{name: "all", kind: boolFlag, usage: "show all available data (imply --json option)"},
}

func cmdInspect(fl *flavor, args []string) int {
	fs := newFlagSet("inspect", fl, inspectFlags)
	rest, err := fs.parse(args)
	if err == errHelp {
		printCmdHelp(fl, "inspect", fs)
		return 0
	}
	if err != nil {
		return usageError(fl, "inspect", fs, err, true)
	}
	if len(rest) != 1 {
		return usageError(fl, "inspect", fs, fmt.Errorf("accepts 1 arg(s), received %d", len(rest)), false)
	}
	if err := fs.emulationCheck(); err != nil {
		fatalf("%s", err)
	}
	img, err := openImage(fl, rest[0])
	if err != nil {
		fatalf("could not open image %s: %s", rest[0], err)
	}
	if img.kind != "sif" {
		fatalf("apptainertest double: inspect of a %s image is not emulated", img.kind)
	}
	fi, err := sif.LoadContainerFromPath(img.path, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		fatalf("could not open image %s: %s", rest[0], err)
	}
	defer func() { _ = fi.UnloadContainer() }()
	labels := map[string]string{}
	if d, err := fi.GetDescriptor(sif.WithDataType(sif.DataLabels)); err == nil {
		if b, err := d.GetData(); err == nil {
			_ = json.Unmarshal(b, &labels)
		}
	}
	deffile := ""
	if d, err := fi.GetDescriptor(sif.WithDataType(sif.DataDeffile)); err == nil {
		if b, err := d.GetData(); err == nil {
			deffile = string(b)
		}
	}
	if fs.bool("json") {
		attrs := map[string]any{}
		if fs.bool("deffile") {
			attrs["deffile"] = deffile
		} else {
			attrs["labels"] = labels
		}
		b, _ := json.MarshalIndent(map[string]any{"data": map[string]any{"attributes": attrs}, "type": "container"}, "", "\t")
		fmt.Println(string(b))
		return 0
	}
	if fs.bool("deffile") {
		fmt.Print(deffile)
		if !strings.HasSuffix(deffile, "\n") {
			fmt.Println()
		}
		return 0
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%s: %s\n", k, labels[k])
	}
	return 0
}
