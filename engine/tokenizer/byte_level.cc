#include "engine/tokenizer/byte_level.h"

#include <array>

#include "engine/tokenizer/utf8.h"

namespace arbor::engine::byte_level {
namespace {

// Printable Latin-1 bytes map to themselves; the other 68 bytes, in order, to U+0100 onwards.
struct Tables {
  std::array<std::string, 256> to_char;
  // Inverse map over code points [0, kEnd): -1 where a code point is not in the alphabet.
  static constexpr char32_t kEnd = 0x100 + 68;
  std::array<int16_t, kEnd> to_byte{};
  Tables() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      to_byte[cp] = static_cast<int16_t>(b);
      utf8::Append(cp, &to_char[static_cast<size_t>(b)]);
    }
  }
};

const Tables& GetTables() {
  static const Tables* tables = new Tables();
  return *tables;
}

}  // namespace

const std::string& ByteToChar(uint8_t b) { return GetTables().to_char[b]; }

int CharToByte(char32_t c) { return c < Tables::kEnd ? GetTables().to_byte[c] : -1; }

std::string Encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) out.append(ByteToChar(static_cast<uint8_t>(ch)));
  return out;
}

}  // namespace arbor::engine::byte_level
