// The start of an HTTP/1.1 response, shared by the two writers of responses: the event loop
// (the transport's own answers, server/http/session.h) and a handler's thread
// (server/http/connection.h). Both append their own framing (Content-Length or chunked, and
// Connection) and the blank line.
#ifndef ARBOR_SERVER_HTTP_RESPONSE_HEAD_H_
#define ARBOR_SERVER_HTTP_RESPONSE_HEAD_H_

#include <string>
#include <string_view>

#include "server/http/message.h"

namespace arbor::server::http {

// "HTTP/1.1 <status> <reason>\r\n", then Content-Type (when not empty), `extra` and `more`, each
// "Name: value\r\n". `more` is what the connection adds to every response (CORS).
std::string ResponseHead(int status, std::string_view content_type, const Headers& extra,
                         const Headers& more = {});

// Whether a response with this status may have a body and a Content-Length (RFC 9110 6.4.1 and
// 8.6: not 1xx, 204 or 304).
bool StatusHasContent(int status);

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_RESPONSE_HEAD_H_
