# Turns a file into a C source that defines it as a byte array, so that a
# file such as libdist/src/master/dashboard.html stays editable as itself and is
# still compiled into the library:
#
#   cmake -DIN=file -DOUT=out.c -DNAME=symbol -P embed_file.cmake
#
# defines `const unsigned char symbol[]` (the bytes and a terminating NUL) and
# `const size_t symbol_len` (without the NUL). OUT is rewritten only when
# its content changes, so an unchanged input rebuilds nothing.
foreach(v IN ITEMS IN OUT NAME)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "embed_file.cmake: -D${v}=... is required")
  endif()
endforeach()

file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" nhex)
math(EXPR len "${nhex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# 16 bytes a line keeps the generated file readable in a debugger.
string(REPEAT "0x[0-9a-f][0-9a-f]," 16 line)
string(REGEX REPLACE "(${line})" "\\1\n" bytes "${bytes}")
get_filename_component(src "${IN}" NAME)
file(WRITE "${OUT}.tmp"
"/* Generated from ${src} by cmake/embed_file.cmake: edit ${src}, not this. */
#include <stddef.h>

extern const unsigned char ${NAME}[];
extern const size_t ${NAME}_len;

const unsigned char ${NAME}[] = {
${bytes}0x00};
const size_t ${NAME}_len = ${len};
")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
