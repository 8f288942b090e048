// GPT-2's byte-level alphabet: each of the 256 byte values is written as one printable code
// point (bytes_to_unicode), so BPE over bytes can use text vocabularies.
#ifndef ARBOR_ENGINE_TOKENIZER_BYTE_LEVEL_H_
#define ARBOR_ENGINE_TOKENIZER_BYTE_LEVEL_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace arbor::engine::byte_level {

// The UTF-8 of the code point that stands for byte `b`.
const std::string& ByteToChar(uint8_t b);

// The byte that code point `c` stands for, or -1 when `c` is not in the alphabet.
int CharToByte(char32_t c);

// Each byte of `bytes` replaced by its code point.
std::string Encode(std::string_view bytes);

}  // namespace arbor::engine::byte_level

#endif  // ARBOR_ENGINE_TOKENIZER_BYTE_LEVEL_H_
