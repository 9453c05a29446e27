package pgdedup_test

const childEnv = "PGDEDUP_TEST_CHILD"

func childMain() int { return 2 }
