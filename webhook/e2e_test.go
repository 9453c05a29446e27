package webhook_test

import (
	"io"
)

const sendHookEnv = "WEBHOOK_TEST_SEND_HOOK"

func sendHook(stdin io.Reader, stderr io.Writer) int { return 1 }
