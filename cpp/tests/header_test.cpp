// tld/tld.hpp compiles on its own, first, without warnings (-Wall -Wextra
// -Wpedantic -Werror): it includes everything it uses.
#include <tld/tld.hpp>

int tld_header_test_anchor() { return static_cast<int>(tld::max_name_length); }
