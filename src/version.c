/*
 * version.c: the library's version at run time, from meson.build's project
 * version, passed as -DBITSLAB_BUILD_VERSION_* (lib_args). meson.build also
 * checks that include/bitslab.h's BITSLAB_VERSION_STRING says the same.
 */
#include "base.h"

_Static_assert(BITSLAB_BUILD_VERSION_MAJOR == BITSLAB_VERSION_MAJOR &&
                   BITSLAB_BUILD_VERSION_MINOR == BITSLAB_VERSION_MINOR &&
                   BITSLAB_BUILD_VERSION_PATCH == BITSLAB_VERSION_PATCH,
               "include/bitslab.h's BITSLAB_VERSION_* differ from meson.build's project version");

const char *bitslab_version(void) { return BITSLAB_BUILD_VERSION_STRING; }

int bitslab_version_number(void)
{
    return BITSLAB_BUILD_VERSION_MAJOR * 10000 + BITSLAB_BUILD_VERSION_MINOR * 100 + BITSLAB_BUILD_VERSION_PATCH;
}
