// The web chat page's files (tools/serve/web/), embedded in the binary at build time by
// tools/serve/web/embed.cmake: nothing is read from disk or fetched at run time.
#pragma once
#include <cstddef>
#include <string_view>

namespace tandem::serve {

struct web_asset {
  const char* path;          // URL path: "/", "/app.js", "/vendor/marked.min.js", ...
  const char* content_type;
  const unsigned char* data;
  size_t size;
};

extern const web_asset k_web_assets[];
extern const size_t k_web_asset_count;

// The asset served at path, or nullptr.
inline const web_asset* find_web_asset(std::string_view path) {
  for (size_t i = 0; i < k_web_asset_count; ++i)
    if (path == k_web_assets[i].path) return &k_web_assets[i];
  return nullptr;
}

}  // namespace tandem::serve
