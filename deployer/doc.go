// Package deployer has ready dedup.Deployers: Cmd runs a program per deploy
// and HTTPDeployer posts to an endpoint per deploy. A Cmd never goes through
// a shell and leaves no process behind: it runs the program in a process
// group of its own and stops the whole group (SIGTERM, then SIGKILL after a
// grace period). Both keep only a bounded part of the output for errors.
//
//	m, err := dedup.New(&deployer.Cmd{
//		Name:   "./deploy.sh", // gets the key and the revision as $1 and $2, and in the environment
//		Args:   []string{"{key}", "{revision}"},
//		Dir:    "/srv/deploy",
//		Env:    []string{"COMPOSE_PROGRESS=plain"},
//		Logger: logger, // each line of output, with key and revision
//		Grace:  30 * time.Second,
//	})
//
//	hook := deployer.HTTP("https://ci.example.com/hooks/deploy")
//	hook.Header = http.Header{"Authorization": {"Bearer " + token}}
//	m2, err := dedup.New(hook)
//
// # Revisions come from outside
//
// A revision often comes from a webhook body or a remote ref: treat it as
// hostile. Cmd hands it to the program as one argument and in the
// environment as DEDUP_REVISION (the key as DEDUP_KEY), never to a shell.
// What remains the caller's job:
//
//   - When you need a shell, never put "{revision}" or "{key}" into the
//     script text, where the shell would parse what they hold. Pass the
//     script as a constant and read the values from the environment, in
//     double quotes:
//     Command("sh", "-c", `git checkout --detach "$DEDUP_REVISION" && exec ./deploy.sh`).
//     "$DEDUP_REVISION" is one word whatever it holds; without the quotes
//     it is split on spaces and globbed.
//   - A revision that starts with "-" reads as an option to most programs,
//     shell or not. Check revisions against what your source produces (a
//     40-digit hex commit SHA, a sha256: digest) before triggering, and put
//     "--" before "{revision}" where the program takes operands after it.
//   - "{key}" in a path (Name, or an argument that is a path) can climb out
//     of a directory with "..": allow only the keys you know.
package deployer
