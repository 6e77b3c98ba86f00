// Ctrl-C (SIGINT) for the commands that generate: the first one asks the command to stop after
// the token in progress (it flushes what it printed and exits with 130, as shells expect of a
// program ended by SIGINT); a second one ends the process at once, as if no handler were there.
#pragma once

namespace tandem::cli {

// Installs the handler; call once, before the work that may be interrupted.
void catch_interrupt();
// True once SIGINT has arrived after catch_interrupt().
bool interrupted();
// The exit status of a command stopped by SIGINT.
constexpr int k_exit_interrupted = 130;

}  // namespace tandem::cli
