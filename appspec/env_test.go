package appspec

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadEnvFile(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "scalebox.env")
	require.NoError(t, os.WriteFile(p, []byte(`# comment
CLUSTER=local

export TAG=bash
EMPTY=
SPACED =  value with spaces   # trailing comment
HASH=a#b
SINGLE='docker run {{ENVS}} $HOME # not a comment'
DOUBLE="line\nnext \"q\" \$X \\ \q" # comment
TEMPLATE='${LOCAL_TMP_ROOT}'
REGEX=^.*cf\$
SLOTS=n-[01][01]:4
CLUSTER=override
`), 0o644))
	vars, err := ReadEnvFile(p)
	require.NoError(t, err)
	require.Equal(t, map[string]string{
		"CLUSTER":  "override",
		"TAG":      "bash",
		"EMPTY":    "",
		"SPACED":   "value with spaces",
		"HASH":     "a#b",
		"SINGLE":   "docker run {{ENVS}} $HOME # not a comment",
		"DOUBLE":   "line\nnext \"q\" $X \\ \\q",
		"TEMPLATE": "${LOCAL_TMP_ROOT}",
		"REGEX":    `^.*cf\$`,
		"SLOTS":    "n-[01][01]:4",
	}, vars)
}

func TestReadEnvFileErrors(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "bad.env")
	require.NoError(t, os.WriteFile(p, []byte("OK=1\nno equals sign\n1BAD=x\nQ='open\nD=\"x\" y\nexport\n"), 0o644))
	_, err := ReadEnvFile(p)
	require.Error(t, err)
	var list ErrorList
	require.ErrorAs(t, err, &list)
	require.Len(t, list, 5)
	require.Equal(t, p+`:2: expected KEY=VALUE, got "no equals sign"`, list[0].Error())
	require.Equal(t, p+`:3: bad variable name "1BAD"`, list[1].Error())
	require.Equal(t, p+`:4: Q: unterminated single quote`, list[2].Error())
	require.Equal(t, p+`:5: D: unexpected "y" after closing quote`, list[3].Error())
	require.Equal(t, p+`:6: expected KEY=VALUE, got "export"`, list[4].Error())

	_, err = ReadEnvFile(filepath.Join(t.TempDir(), "missing.env"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestExpand(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"A": "1", "B": "", "AB": "x"}
	for in, want := range map[string]string{
		"":                      "",
		"plain":                 "plain",
		"${A}":                  "1",
		"${A}${B}${AB}":         "1x",
		"$A ${A}":               "$A 1",
		"$${A}":                 "${A}",
		"a$":                    "a$",
		"$ {A}":                 "$ {A}",
		"${CLUSTER_DATA_DIR}/d": "${CLUSTER_DATA_DIR}/d",
	} {
		got, undefined, err := expand(in, vars)
		require.NoError(t, err, in)
		require.Empty(t, undefined, in)
		require.Equal(t, want, got, in)
	}
	_, undefined, err := expand("${X}-${A}-${Y}", vars)
	require.NoError(t, err)
	require.Equal(t, []string{"X", "Y"}, undefined)
	for _, bad := range []string{"${", "${A", "${}", "${A B}", "${A:-x}", "${1A}"} {
		_, _, err := expand(bad, vars)
		require.Error(t, err, bad)
	}
}
