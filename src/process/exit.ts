// How the process leaves at once (SHUTDOWN, SIGQUIT, a second SIGINT): the entry module
// installs the steps that must happen first (listeners closed, pidfile removed, systemd told) when
// it starts, and the pooler calls exitNow without importing the entry module.

let leave: (code: number) => never = (code) => process.exit(code);

export function setExitHandler(fn: (code: number) => never): void {
  leave = fn;
}

export function exitNow(code: number): never {
  return leave(code);
}
