/*
 * Base-image recipes: the bases mbuild makes itself from Debian's packages.
 *
 * A recipe's layer is keyed by its name and version, not by the state of
 * the mirror on the day it was built, so every machine computes the same
 * keys. Bump a recipe's version whenever what it produces changes.
 */
#ifndef MBUILD_RECIPE_H
#define MBUILD_RECIPE_H

struct mb_recipe {
    const char *name; /* as written in `base:` */
    unsigned version;
    const char *summary;
    const char *package_manager; /* how `packages:` installs: "apt" or NULL for none */
};

/* The recipe named `name`, or NULL. */
const struct mb_recipe *mb_recipe_find(const char *name);

/* Known names, comma-separated, for error messages ("tiny, debian-12"). */
const char *mb_recipe_names(void);

#endif
