// Whether an HTTP client is still there. cpp-httplib (0.11) does not hand a handler its socket,
// so the socket is found once per request by the connection's two addresses, then peeked at
// between tokens: a client that went away cancels its generation at once, not when the next
// write happens to fail.
#pragma once
#include <string>

namespace tandem::serve {

// The descriptor of this process's TCP socket whose local end is local_addr:local_port and
// whose peer is remote_addr:remote_port; -1 when none is found.
int find_socket(const std::string& local_addr, int local_port, const std::string& remote_addr,
                int remote_port);

// True when the peer has closed the connection (an orderly close, a reset, or an error on the
// socket). Bytes waiting to be read (a pipelined request) count as open. fd < 0: false.
bool peer_closed(int fd);

}  // namespace tandem::serve
