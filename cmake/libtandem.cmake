# libtandem: the public C API (runtime/tandem.h) as a shared library, and its installation
# (library, header, pkg-config file, CMake package tandem::tandem). Included by the top-level
# CMakeLists.txt after tandem_core is complete.

enable_language(C)  # the C test programs
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

file(STRINGS ${PROJECT_SOURCE_DIR}/runtime/tandem.h _tandem_version_line
     REGEX "^#define TANDEM_VERSION_STRING ")
string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" TANDEM_API_VERSION "${_tandem_version_line}")
string(REGEX MATCH "^[0-9]+" TANDEM_API_SOVERSION "${TANDEM_API_VERSION}")

# The shared library is made of tandem_core's own objects: compiled position-independent, with
# hidden visibility so that only the TANDEM_API functions are exported (the version script makes
# sure nothing else is, template instantiations of the standard library included).
set_target_properties(tandem_core PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON)
add_library(tandem_shared SHARED $<TARGET_OBJECTS:tandem_core>)
add_dependencies(tandem_shared tandem_core)
target_link_libraries(tandem_shared PRIVATE fmt::fmt TBB::tbb Threads::Threads ${CMAKE_DL_LIBS})
target_include_directories(tandem_shared INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
set_target_properties(tandem_shared PROPERTIES
  OUTPUT_NAME tandem
  EXPORT_NAME tandem
  LINKER_LANGUAGE CXX
  VERSION ${TANDEM_API_VERSION}
  SOVERSION ${TANDEM_API_SOVERSION}
  PUBLIC_HEADER ${PROJECT_SOURCE_DIR}/runtime/tandem.h
  LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/tandem.map)
target_link_options(tandem_shared PRIVATE
  "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/tandem.map")
if(NOT TANDEM_SANITIZE)  # the sanitizers' runtimes leave symbols to the executable
  target_link_options(tandem_shared PRIVATE "LINKER:--no-undefined")
endif()

install(TARGETS tandem_shared EXPORT tandemTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS tandem RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT tandemTargets NAMESPACE tandem::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tandem)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tandemConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tandemConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tandem)
# 0.x: a new minor version may change the ABI.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tandemConfigVersion.cmake
  VERSION ${TANDEM_API_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tandemConfig.cmake ${PROJECT_BINARY_DIR}/tandemConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tandem)

# The .pc file finds its prefix from its own place, so that `cmake --install --prefix` anywhere
# gives a working file.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(TANDEM_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(TANDEM_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  string(REGEX REPLACE "[^/]+" ".." _up "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
  set(TANDEM_PC_PREFIX "\${pcfiledir}/${_up}")
  set(TANDEM_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/tandem.pc.in ${PROJECT_BINARY_DIR}/tandem.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/tandem.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
