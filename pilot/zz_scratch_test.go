package pilot

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/container"
)

func TestScratch(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "code"), 0o755)
	os.WriteFile(filepath.Join(d, "app.yaml"), []byte("name: a\ncluster: local\nmodules:\n  m:\n    base_image: x.sif\n    arguments:\n      code_path: code\n"), 0o644)
	app, err := appspec.Load(filepath.Join(d, "app.yaml"), appspec.Options{Environ: []string{}})
	if err != nil { t.Fatal(err) }
	m := app.Modules[0]
	fmt.Printf("%q %q\n", m.CodePath, m.Arguments["code_path"])
	b, err := Binds(m, ContainerConfig{}, d, "", "", "")
	fmt.Printf("%+v %v\n", b, err)
	_, err = container.Plan(b)
	fmt.Println(err)
	fmt.Println(ExplainBinds(os.Stdout, m, 1, ContainerConfig{}, "/scratch", ""))
	fmt.Printf("%q\n", toHost([]container.Bind{{Source: "/h", Target: "/c/"}}, "/c/x"))
}
