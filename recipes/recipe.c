/*
 * The table of base-image recipes. How each is built lives beside it in
 * recipes/; this file is only what keys and plans need to know.
 */
#include <string.h>

#include "mbuild/recipe.h"

static const struct mb_recipe recipes[] = {
    {"tiny", 2, "busybox root filesystem with Dropbear ssh, for tests and quick starts", NULL},
    {"debian-12", 1, "Debian bookworm with systemd, openssh-server and sudo", "apt"},
};

const struct mb_recipe *mb_recipe_find(const char *name)
{
    for (size_t i = 0; i < sizeof(recipes) / sizeof(recipes[0]); i++)
        if (strcmp(recipes[i].name, name) == 0)
            return &recipes[i];
    return NULL;
}

const char *mb_recipe_names(void)
{
    return "tiny, debian-12";
}
