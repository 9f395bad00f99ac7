package containertest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLdd(t *testing.T) {
	out := []byte("\tlinux-vdso.so.1 (0x00007ffd5a1f2000)\n" +
		"\tlibtinfo.so.6 => /lib/x86_64-linux-gnu/libtinfo.so.6 (0x00007f0e1a0a0000)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e19ebe000)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1a224000)\n")
	libs, err := parseLdd("/bin/bash", out)
	require.NoError(t, err)
	require.Equal(t, []string{
		"/lib/x86_64-linux-gnu/libtinfo.so.6",
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/lib64/ld-linux-x86-64.so.2",
	}, libs)

	_, err = parseLdd("/x/app", []byte("\tlibfoo.so.1 => not found\n"))
	require.EqualError(t, err, "ldd /x/app: libfoo.so.1 is not found")
}

func TestRootfsLayout(t *testing.T) {
	root := Rootfs(t)
	require.Equal(t, root, Rootfs(t), "cached per set of inputs")

	for _, d := range []string{"work", "app/bin", "local_data_root", "cluster_data_root", "proc", "dev", "sys", "etc", "root"} {
		fi, err := os.Stat(filepath.Join(root, d))
		require.NoError(t, err, d)
		require.True(t, fi.IsDir(), d)
	}
	fi, err := os.Stat(filepath.Join(root, "tmp"))
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|os.ModeSticky|0o777, fi.Mode())
	fi, err = os.Stat(root)
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|0o755, fi.Mode())

	for _, f := range []string{"bin/bash", "bin/busybox"} {
		fi, err := os.Stat(filepath.Join(root, f))
		require.NoError(t, err, f)
		require.True(t, fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0, f)
	}
	for _, a := range []string{"sh", "awk", "cat", "sleep", "env"} {
		target, err := os.Readlink(filepath.Join(root, "bin", a))
		require.NoError(t, err, a)
		require.Equal(t, "busybox", target)
	}
	libs, err := sharedLibs(filepath.Join(root, "bin/bash"))
	require.NoError(t, err)
	require.NotEmpty(t, libs)
	for _, l := range libs {
		_, err := os.Stat(filepath.Join(root, l))
		require.NoError(t, err, "library %s of bash", l)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	require.NoError(t, err)
	require.Contains(t, string(passwd), "root:x:0:0:")

	h1, err := TreeHash(root)
	require.NoError(t, err)
	h2, err := TreeHash(root)
	require.NoError(t, err)
	require.Equal(t, h1, h2)
}

func TestRootfsExtraBinaryRunsInChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	// coreutils' printenv is dynamically linked: its libraries must come along.
	root := Rootfs(t, "printenv")
	require.NotEqual(t, root, Rootfs(t), "another set of inputs is another root file system")
	_, err := os.Stat(filepath.Join(root, "usr/local/bin/printenv"))
	require.NoError(t, err)

	cmd := exec.Command("/bin/bash", "-c", `cd /work && /usr/local/bin/printenv FOO && awk 'BEGIN{print 6*7}' && env true && echo "$(id -u) $(ls -d /tmp)"`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Env = []string{"FOO=bar", "PATH=/usr/local/bin:/usr/bin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	require.Equal(t, "bar\n42\n0 /tmp\n", string(out))
}

func TestRootfsMissingExtraBinary(t *testing.T) {
	_, err := resolveBinary("no-such-binary-scalebox")
	require.Error(t, err)
	_, err = resolveBinary("/etc/passwd")
	require.ErrorContains(t, err, "not an executable file")
}
