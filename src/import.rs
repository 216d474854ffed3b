//! `[import]` recipes: the output is the sources themselves, unpacked (`.deb`
//! data archives, tarballs) or copied. Used by the bootstrap seeds in toolchain/.
