package site_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/pbs"
	"github.com/scalebox-hpc/scalebox/site"
	"github.com/scalebox-hpc/scalebox/slurm"
)

func TestExamplesLoadAndRender(t *testing.T) {
	t.Parallel()
	s, err := site.Load("../examples/sites/hpc-slurm.yaml")
	require.NoError(t, err)
	require.Equal(t, "slurm", s.Kind)
	j, err := s.JobSpec(7, 3)
	require.NoError(t, err)
	require.Equal(t, []string{"/home/alice/bin/scalebox", "--broker", "http://login01:8080", "pilot", "run", "--app-id", "7",
		"--site", "hpc-slurm", "--slots", "mr-module:1,my-module:8", "--grace", "1m0s", "--max-idle", "10m0s", "--scratch", "/local/scratch"}, j.Command)
	require.Equal(t, 3, j.ArraySize)
	require.EqualValues(t, 16384, j.MemoryMB)
	var out bytes.Buffer
	require.NoError(t, slurm.New(batch.Exec{}).Render(&out, j))
	for _, want := range []string{"#SBATCH --partition=cpu", "#SBATCH --account=proj42", "#SBATCH --array=0-2", "#SBATCH --signal=B:USR1@360", "#SBATCH --mail-type=NONE"} {
		require.Contains(t, out.String(), want)
	}

	p, err := site.Load("../examples/sites/hpc-pbs.yaml")
	require.NoError(t, err)
	j, err = p.JobSpec(7, 1)
	require.NoError(t, err)
	require.Equal(t, "workq", j.Queue)
	out.Reset()
	require.NoError(t, pbs.New(batch.Exec{}).Render(&out, j))
	require.Contains(t, out.String(), "#PBS -q workq")
	require.Contains(t, out.String(), "walltime=01:00:00")
}

func TestBadSitesNameTheLine(t *testing.T) {
	t.Parallel()
	for yml, want := range map[string]string{
		"name: a\nkind: slurm\nbroker: http://x\npilot:\n  cores: 4\n  corez: 2\n": "site.yaml:4: pilot",
		"name: a\nkind: lsf\n": "site.yaml:2: kind",
		"name: a\nkind: slurm\nbroker: http://x\npilot: {cores: -1}\n":      "site.yaml:4: pilot.cores",
		"name: a\nkind: slurm\nbroker: http://x\npilot: {walltime: soon}\n": "pilot.walltime",
		"name: a\nkind: slurm\n":                                   "broker",
		"name: a\nkind: slurm\nbroker: x\npilot: {memory: lots}\n": "pilot.memory",
		"kind: [": "site.yaml",
	} {
		_, err := site.Parse("site.yaml", []byte(yml))
		require.Error(t, err, yml)
		require.Contains(t, err.Error(), want, yml)
	}
	_, err := site.Parse("s.yaml", []byte("name: l\nkind: local\n"))
	require.NoError(t, err)
	s, _ := site.Parse("s.yaml", []byte("name: l\nkind: local\n"))
	_, err = s.JobSpec(1, 1)
	require.ErrorContains(t, err, "only slurm and pbs")
}

func TestContainerSettingsReachThePilot(t *testing.T) {
	t.Parallel()
	s, err := site.Parse("s.yaml", []byte(`name: gpu
kind: slurm
broker: http://login:8080
pilot:
  container:
    engine: apptainer
    path: /opt/apptainer/bin/apptainer
    flags: [--userns, "--bind=/cvmfs"]
    cleanenv: true
    gpu: amd
    image_cache: /local/images
    image_cache_gb: 50
    data_root: /lustre/proj
`))
	require.NoError(t, err)
	j, err := s.JobSpec(3, 1)
	require.NoError(t, err)
	require.Equal(t, []string{"--container-engine", "apptainer", "--container-path", "/opt/apptainer/bin/apptainer",
		"--gpu-vendor", "amd", "--image-cache", "/local/images", "--data-root", "/lustre/proj", "--image-cache-gb", "50",
		"--container-flag=--userns", "--container-flag=--bind=/cvmfs", "--cleanenv"}, j.Command[len(j.Command)-15:])

	_, err = site.Parse("s.yaml", []byte("name: a\nkind: slurm\nbroker: http://x\npilot:\n  container:\n    engine: lxc\n"))
	require.ErrorContains(t, err, "s.yaml:6: pilot.container.engine")
}
