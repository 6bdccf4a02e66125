# What `cmake --install` puts where (README "Install, systemd and packages" lists it), and the
# Debian package made of exactly those files by CPack. Included from the top CMakeLists.txt:
# CPack's `package` target exists only at the top level.
include(GNUInstallDirs)

# Units live under lib/ (not the multiarch libdir); systemd also reads /usr/local/lib/systemd.
# The package sets /lib/systemd/system, where Debian 12's own packages put theirs.
set(SLUICE_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "Where sluice.service goes (relative: under the install prefix)")

# sluice.pc finds its prefix from where it lies, so `cmake --install --prefix DIR` works too.
# Libs.private: what libsluice.a needs, for `pkg-config --static`, from the same package
# lookups the library is built with.
file(RELATIVE_PATH SLUICE_PC_UP /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
set(SLUICE_PC_LIBS_PRIVATE "")
foreach(package INIH URCU CURL CJSON)
    foreach(lib ${${package}_LIBRARIES})
        string(APPEND SLUICE_PC_LIBS_PRIVATE " -l${lib}")
    endforeach()
endforeach()
string(APPEND SLUICE_PC_LIBS_PRIVATE " -lpthread")
configure_file(${PROJECT_SOURCE_DIR}/src/mesh/sluice.pc.in ${PROJECT_BINARY_DIR}/sluice.pc @ONLY)

# The unit names the daemon and the config where this tree installs them.
set(SLUICE_UNIT_BIN ${CMAKE_INSTALL_FULL_BINDIR}/sluice)
set(SLUICE_UNIT_CONFIG ${CMAKE_INSTALL_FULL_SYSCONFDIR}/sluice/sluice.ini)
configure_file(${PROJECT_SOURCE_DIR}/dist/sluice.service.in ${PROJECT_BINARY_DIR}/sluice.service
               @ONLY)

# The man page is roff already: only the version goes in, then gzip -n (no timestamp, so the
# same tree gives the same bytes) as Debian ships man pages.
configure_file(${PROJECT_SOURCE_DIR}/dist/sluice.8 ${PROJECT_BINARY_DIR}/sluice.8 @ONLY)
add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/sluice.8.gz
                   COMMAND gzip -9nfk ${PROJECT_BINARY_DIR}/sluice.8
                   DEPENDS ${PROJECT_BINARY_DIR}/sluice.8 VERBATIM)
add_custom_target(sluice_man ALL DEPENDS ${PROJECT_BINARY_DIR}/sluice.8.gz)

install(TARGETS sluice RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS sluice_shared LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS sluice_static ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/sluice.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/sluice.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(FILES ${PROJECT_SOURCE_DIR}/config/sluice.ini DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/sluice)
install(FILES ${PROJECT_BINARY_DIR}/sluice.service DESTINATION ${SLUICE_SYSTEMD_UNITDIR})
install(FILES ${PROJECT_BINARY_DIR}/sluice.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)

# --- the Debian package: `make deb` configures a tree for /usr (sysconfdir /etc, the unit in
# /lib/systemd/system) and runs cpack there. CPack packs what the install rules above install,
# so the package cannot drift from `cmake --install`.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sluice)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Layer-4 TCP load-balancing proxy with Consul discovery")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
       "sluice accepts TCP connections on its listeners and splices them to a healthy instance "
       "of each listener's service, picked by the service's balancer. Instance sets come from "
       "the configuration file or from Consul. Also ships libsluice (client-side balancing), "
       "its header, static library and pkg-config file.")
set(CPACK_PACKAGE_CONTACT "sluice maintainers <sluice@localhost>")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# absolute destinations (/etc, /lib/systemd/system) land in the staging root, not on this host
set(CPACK_SET_DESTDIR ON)
# dependencies from the ELF files themselves (dpkg-shlibdeps): right by construction
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")
configure_file(${PROJECT_SOURCE_DIR}/dist/conffiles.in ${PROJECT_BINARY_DIR}/deb/conffiles @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/dist/prerm ${PROJECT_BINARY_DIR}/deb/prerm COPYONLY)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/deb/conffiles
    ${PROJECT_BINARY_DIR}/deb/prerm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
