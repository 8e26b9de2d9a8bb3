# `cmake --install` and the .deb (CPack).
#
# Where things go (GNUInstallDirs, relative to the install prefix):
#   bin/snapledgerd, bin/snapledger
#   lib/systemd/system/snapledgerd.service   (SNAPLEDGER_SYSTEMD_UNIT_DIR)
#   share/doc/snapledger/                    README.md and docs/*.md
#   share/snapledger/                        Prometheus alert rules, if any
#   <etc>/snapledger/config.toml             the default config
#   <etc>/containerd/conf.d/snapledger.toml  containerd's drop-in
# <etc> is /etc for the prefixes / and /usr (the .deb's), else <prefix>/etc,
# as GNUInstallDirs has it. Both are decided when installing, not when
# configuring: `cmake --install build --prefix /usr` and CPack (which
# installs into /usr under a staging DESTDIR) get the unit's ExecStart and
# --config right for the prefix they install into. An existing config or
# drop-in is never overwritten by `cmake --install`: the shipped one is put
# beside it as *.new (the .deb marks both as conffiles; dpkg asks).
include(GNUInstallDirs)

set(SNAPLEDGER_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "Where the systemd unit goes (relative: to the install prefix)")

install(TARGETS snapledgerd snapledger RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
file(GLOB _snapledger_docs ${PROJECT_SOURCE_DIR}/docs/*.md)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${_snapledger_docs}
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
# The metrics' alert rules (docs/metrics.md), when the tree has them.
file(GLOB _snapledger_rules ${PROJECT_SOURCE_DIR}/install/*rules*.yml
     ${PROJECT_SOURCE_DIR}/install/*rules*.yaml
     ${PROJECT_SOURCE_DIR}/install/*alert*.yml
     ${PROJECT_SOURCE_DIR}/install/*alert*.yaml)
if(_snapledger_rules)
  install(FILES ${_snapledger_rules}
          DESTINATION ${CMAKE_INSTALL_DATADIR}/snapledger)
endif()

# The unit and the two configs, with paths of the prefix being installed
# into (cmake/InstallConfigs.cmake runs at install time).
install(CODE "
  set(SNAPLEDGER_SOURCE_DIR [[${PROJECT_SOURCE_DIR}]])
  set(SNAPLEDGER_BINARY_DIR [[${PROJECT_BINARY_DIR}]])
  set(SNAPLEDGER_BINDIR [[${CMAKE_INSTALL_BINDIR}]])
  set(SNAPLEDGER_SYSCONFDIR [[${CMAKE_INSTALL_SYSCONFDIR}]])
  set(SNAPLEDGER_DOCDIR [[${CMAKE_INSTALL_DOCDIR}]])
  set(SNAPLEDGER_SYSTEMD_UNIT_DIR [[${SNAPLEDGER_SYSTEMD_UNIT_DIR}]])
  include([[${PROJECT_SOURCE_DIR}/cmake/InstallConfigs.cmake]])
")

# ---- the .deb: cpack -G DEB (in the build directory) ----
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME snapledger)
set(CPACK_PACKAGE_VENDOR "snapledger")
set(CPACK_PACKAGE_CONTACT "snapledger maintainers <snapledger@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "containerd proxy snapshotter with a durable ledger")
set(CPACK_PACKAGE_DESCRIPTION
    "snapledgerd sits between containerd and a real snapshotter (overlayfs, \
native, or another snapshotter's gRPC service) and records every prepare, \
commit and remove in a RocksDB ledger, intent first, so that no snapshot can \
exist without a record and no removal can fail silently. snapledger is its \
admin CLI.")
# A test build packages the same way, but says so (crash points stay inert
# unless SNAPLEDGER_CRASH_AT is set; sanitizers slow everything).
if(SNAPLEDGER_CRASH_POINTS OR SNAPLEDGER_SANITIZE OR SNAPLEDGER_TSAN)
  string(APPEND CPACK_PACKAGE_DESCRIPTION
         " This is a test build (crash points or sanitizers compiled in).")
endif()
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
# Depends: the Debian packages of the shared libraries the binaries link
# (dpkg-shlibdeps, from dpkg-dev).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS containerd)
# RelWithDebInfo binaries carry their debug info; the package does not.
set(CPACK_STRIP_FILES ON)
# conffiles (what dpkg keeps an admin's edits of) and the maintainer scripts:
# enable the unit on first install and restart it on upgrade, as
# dh_installsystemd would; nothing without systemd as PID 1 (a chroot, a
# container), and deb-systemd-invoke honours policy-rc.d.
set(_snapledger_deb ${PROJECT_SOURCE_DIR}/install/debian)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${_snapledger_deb}/conffiles ${_snapledger_deb}/postinst
    ${_snapledger_deb}/prerm ${_snapledger_deb}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
