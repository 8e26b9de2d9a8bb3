# Runs at install time (see cmake/Install.cmake), with CMAKE_INSTALL_PREFIX
# and DESTDIR of the install being made: the systemd unit with this prefix's
# paths, the default config and containerd's drop-in, never over existing
# ones.

# GNUInstallDirs' rule for the prefix being installed into.
if(IS_ABSOLUTE "${SNAPLEDGER_SYSCONFDIR}")
  set(_etc "${SNAPLEDGER_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX MATCHES "^/(usr/?)?$")
  set(_etc "/${SNAPLEDGER_SYSCONFDIR}")
else()
  set(_etc "${CMAKE_INSTALL_PREFIX}/${SNAPLEDGER_SYSCONFDIR}")
endif()
string(REGEX REPLACE "/+$" "" _prefix "${CMAKE_INSTALL_PREFIX}")

# What the unit names: where this install puts the binary and the config.
set(SNAPLEDGER_BINDIR "${_prefix}/${SNAPLEDGER_BINDIR}")
set(SNAPLEDGER_CONFDIR "${_etc}/snapledger")
set(SNAPLEDGER_DOCDIR "${_prefix}/${SNAPLEDGER_DOCDIR}")
set(_unit "${SNAPLEDGER_BINARY_DIR}/install/snapledgerd.service")
configure_file("${SNAPLEDGER_SOURCE_DIR}/install/snapledgerd.service.in"
               "${_unit}" @ONLY)
if(IS_ABSOLUTE "${SNAPLEDGER_SYSTEMD_UNIT_DIR}")
  set(_unit_dir "${SNAPLEDGER_SYSTEMD_UNIT_DIR}")
else()
  set(_unit_dir "${_prefix}/${SNAPLEDGER_SYSTEMD_UNIT_DIR}")
endif()
file(INSTALL "${_unit}" DESTINATION "${_unit_dir}"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# _snapledger_install_conf(SOURCE DIR NAME): SOURCE as DIR/NAME, or as
# DIR/NAME.new when DIR/NAME exists with other content (an admin's edits
# stay).
function(_snapledger_install_conf source dir name)
  set(target "$ENV{DESTDIR}${dir}/${name}")
  if(EXISTS "${target}")
    file(SHA256 "${target}" have)
    file(SHA256 "${source}" shipped)
    if(NOT have STREQUAL shipped)
      message(STATUS "Keeping ${dir}/${name} (it differs from the shipped "
                     "one, installed as ${name}.new)")
      set(staged "${SNAPLEDGER_BINARY_DIR}/install/${name}.new")
      configure_file("${source}" "${staged}" COPYONLY)
      file(INSTALL "${staged}" DESTINATION "${dir}"
           PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
      return()
    endif()
  endif()
  set(staged "${SNAPLEDGER_BINARY_DIR}/install/staged/${name}")
  configure_file("${source}" "${staged}" COPYONLY)
  file(INSTALL "${staged}" DESTINATION "${dir}"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endfunction()

_snapledger_install_conf("${SNAPLEDGER_SOURCE_DIR}/install/config.toml"
                         "${_etc}/snapledger" config.toml)
_snapledger_install_conf("${SNAPLEDGER_SOURCE_DIR}/install/containerd-dropin.toml"
                         "${_etc}/containerd/conf.d" snapledger.toml)
