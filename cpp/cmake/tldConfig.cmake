# find_package(tld) for an installed tld C++ binding (`cmake --install` of
# cpp/): defines tld::tld, the static archive libtld_cxx.a with tld/tld.hpp.
include(CMakeFindDependencyMacro)
find_dependency(Threads)

get_filename_component(_tld_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET tld::tld)
  add_library(tld::tld STATIC IMPORTED)
  set_target_properties(tld::tld PROPERTIES
    IMPORTED_LOCATION "${CMAKE_CURRENT_LIST_DIR}/../../libtld_cxx.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_tld_prefix}/include"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
endif()
unset(_tld_prefix)
