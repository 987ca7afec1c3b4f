# Turns a file into a C source defining `const unsigned char NAME[]` and
# `const unsigned long NAME_len`, so scripts that run inside VMs stay real
# files in the repository. Run with -DINPUT= -DOUTPUT= -DNAME=.
file(READ "${INPUT}" content HEX)
string(LENGTH "${content}" hex_length)
math(EXPR length "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n    "
       bytes "${bytes}")
file(WRITE "${OUTPUT}"
     "/* Generated from ${INPUT} by cmake/embed.cmake; do not edit. */\n"
     "const unsigned char ${NAME}[] = {\n    ${bytes}0x00\n};\n"
     "const unsigned long ${NAME}_len = ${length};\n")
