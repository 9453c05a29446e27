//go:build unix

package deployer_test

import (
	"context"
	"fmt"
	"os"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/deployer"
)

func ExampleCommand() {
	d := deployer.Command("echo", "deploying", "{key}", "at", "{revision}")
	d.Stdout = os.Stdout
	err := d.Deploy(context.Background(), "web", "4f2a9c1")
	fmt.Println("error:", err)
	// Output:
	// deploying web at 4f2a9c1
	// error: <nil>
}

// When a deploy needs a shell, keep the script constant and read the key
// and revision from the environment, in double quotes. Whatever the
// revision holds, the shell sees one word.
func ExampleCommand_shell() {
	d := deployer.Command("sh", "-c", `printf 'checking out %s for %s\n' "$DEDUP_REVISION" "$DEDUP_KEY"`)
	d.Stdout = os.Stdout
	err := d.Deploy(context.Background(), "web", `main; rm -rf "$HOME" *`)
	fmt.Println("error:", err)
	// Output:
	// checking out main; rm -rf "$HOME" * for web
	// error: <nil>
}

func ExampleExitError() {
	d := deployer.Command("sh", "-c", `echo "pulling $DEDUP_REVISION"; echo "no such image" >&2; exit 3`)
	err := d.Deploy(context.Background(), "web", "v2")
	fmt.Println(err)
	// Output:
	// deployer: sh: exit status 3
	// output:
	// pulling v2
	// no such image
}

func ExampleCmd_withManager() {
	m, err := dedup.New(&deployer.Cmd{
		Name:   "echo",
		Args:   []string{"deployed", "{key}", "{revision}"},
		Stdout: os.Stdout,
	})
	if err != nil {
		panic(err)
	}
	defer m.Close(context.Background())

	res, err := m.Deploy(context.Background(), "web", "4f2a9c1")
	fmt.Println(res.Revision, err)
	// Output:
	// deployed web 4f2a9c1
	// 4f2a9c1 <nil>
}
