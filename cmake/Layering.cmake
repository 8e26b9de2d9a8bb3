# The layering check: every include of a project header must follow an edge
# of the CMake target graph.
#
# Components register with snapledger_component(TARGET). At the end of the
# configure step, snapledger_check_layering() reads every source and header
# of each component (tests excluded: a test may reach across layers to set
# up what it tests) and, for each `#include "plugin/...", "store/...",
# "cli/..."`, finds the component that owns the header (the one whose folder
# holds it). The owner must be the component itself or one it links, directly
# or through other components. An include across any other edge fails the
# configure step, and therefore the build: CMake re-runs the check whenever
# a checked file changes (CMAKE_CONFIGURE_DEPENDS). A component linking
# itself back through others (a cycle) fails the same way.

define_property(GLOBAL PROPERTY SNAPLEDGER_COMPONENTS
  BRIEF_DOCS "snapledger library targets under the layering check"
  FULL_DOCS "see cmake/Layering.cmake")

function(snapledger_component target)
  set_property(GLOBAL APPEND PROPERTY SNAPLEDGER_COMPONENTS ${target})
endfunction()

# The snapledger components `target` links, directly or transitively.
function(_snapledger_deps target out)
  set(seen "")
  set(todo ${target})
  get_property(components GLOBAL PROPERTY SNAPLEDGER_COMPONENTS)
  while(todo)
    list(POP_FRONT todo t)
    get_target_property(type ${t} TYPE)
    set(links "")
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(direct ${t} LINK_LIBRARIES)
      if(direct)
        list(APPEND links ${direct})
      endif()
    endif()
    get_target_property(iface ${t} INTERFACE_LINK_LIBRARIES)
    if(iface)
      list(APPEND links ${iface})
    endif()
    foreach(l IN LISTS links)
      string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" l "${l}")
      if(l IN_LIST components AND NOT l IN_LIST seen)
        list(APPEND seen ${l})
        list(APPEND todo ${l})
      endif()
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

function(snapledger_check_layering)
  get_property(components GLOBAL PROPERTY SNAPLEDGER_COMPONENTS)
  # Header folder (relative to the source root) -> owning component.
  set(errors "")
  # Executables own no headers.
  foreach(c IN LISTS components)
    get_target_property(type ${c} TYPE)
    if(type STREQUAL "EXECUTABLE")
      continue()
    endif()
    get_target_property(dir ${c} SOURCE_DIR)
    file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${dir})
    if(DEFINED owner_of_${rel})
      string(APPEND errors "\n  ${rel}/ holds two components: "
                           "${owner_of_${rel}} and ${c}")
    endif()
    set(owner_of_${rel} ${c})
  endforeach()
  foreach(c IN LISTS components)
    get_target_property(dir ${c} SOURCE_DIR)
    _snapledger_deps(${c} deps)
    if(c IN_LIST deps)
      string(APPEND errors "\n  ${c} depends on itself (a cycle)")
    endif()
    # A library's checked files: its sources and every header of its folder;
    # an executable's: its own sources.
    get_target_property(type ${c} TYPE)
    set(files "")
    if(NOT type STREQUAL "EXECUTABLE")
      file(GLOB files ${dir}/*.h)
    endif()
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(srcs ${c} SOURCES)
      foreach(src IN LISTS srcs)
        if(src MATCHES "\\.(cc|h)$" AND NOT src MATCHES "\\$<")
          get_filename_component(abs ${src} ABSOLUTE BASE_DIR ${dir})
          list(APPEND files ${abs})
        endif()
      endforeach()
    endif()
    list(REMOVE_DUPLICATES files)
    list(FILTER files EXCLUDE REGEX "_test\\.cc$")
    foreach(f IN LISTS files)
      set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY
                   CMAKE_CONFIGURE_DEPENDS ${f})
      file(STRINGS ${f} includes REGEX "^#include \"(plugin|store|cli)/")
      foreach(line IN LISTS includes)
        string(REGEX REPLACE "^#include \"([^\"]*)/[^/\"]*\".*$" "\\1" hdir
                             "${line}")
        if(NOT DEFINED owner_of_${hdir})
          continue()  # test doubles (plugin/testing) and generated code
        endif()
        set(owner ${owner_of_${hdir}})
        if(NOT owner STREQUAL c AND NOT owner IN_LIST deps)
          file(RELATIVE_PATH relf ${PROJECT_SOURCE_DIR} ${f})
          string(APPEND errors
                 "\n  ${relf}: ${line} — ${c} does not link ${owner}")
        endif()
      endforeach()
    endforeach()
  endforeach()
  if(errors)
    message(FATAL_ERROR "layering check failed (docs/architecture.md, "
                        "\"Components\"):${errors}")
  endif()
  list(LENGTH components n)
  message(STATUS "layering check: ${n} components, every include follows "
                 "the target graph")
endfunction()
