#!/usr/bin/env node
// pgbun entry point (npm bin): the compiled CLI runs itself on import.
import '../dist/src/cli.js';
