# Installs shmarray from BUILD_DIR into a private prefix, then builds and
# runs a user's program three ways: find_package, pkg-config, add_subdirectory.
cmake_minimum_required(VERSION 3.20)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
  set(last_error "${err}" PARENT_SCOPE)
endfunction()

# A program built against the installed targets finds the installed helper
# by the path its target records, installed with --prefix as here: nothing
# on PATH or in the environment helps it.
function(expect_helper_found program)
  run(${CMAKE_COMMAND} -E env --unset=SHMARRAY_HELPER PATH=/usr/bin:/bin ${program})
  if(last_error MATCHES "no watchdog helper found")
    message(FATAL_ERROR "${program} did not find the installed helper: ${last_error}")
  endif()
endfunction()

function(expect_consumer_ok)
  if(NOT last_output MATCHES "consumer ok")
    message(FATAL_ERROR "the consumer did not report success: ${last_output}")
  endif()
endfunction()

set(prefix ${WORK_DIR}/prefix)
set(consumer ${SOURCE_DIR}/tests/package/consumer)
file(REMOVE_RECURSE ${WORK_DIR})

# At top level SHMARRAY_INSTALL defaults to on (the tree tested here).
file(STRINGS ${BUILD_DIR}/CMakeCache.txt install_option REGEX "^SHMARRAY_INSTALL:")
if(NOT install_option MATCHES "=ON$")
  message(FATAL_ERROR "SHMARRAY_INSTALL is not on at top level: ${install_option}")
endif()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# find_package(shmarray CONFIG REQUIRED) against the installed tree.
run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK_DIR}/find -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_CXX_COMPILER=${CXX})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/find)
run(${WORK_DIR}/find/consumer)
expect_consumer_ok()
run(${WORK_DIR}/find/consumer_adapters)
expect_consumer_ok()
message(STATUS "find_package: ${last_output}")
if(EXISTS ${prefix}/bin/shmarray)
  expect_helper_found(${WORK_DIR}/find/consumer)
endif()

# pkg-config, by hand as a Makefile user would.
run(${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/share/pkgconfig
    pkg-config --cflags --libs shmarray)
string(STRIP "${last_output}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
set(include_dir "")
foreach(f ${flags})
  if(f MATCHES "^-I(.*)")
    file(REAL_PATH "${CMAKE_MATCH_1}" include_dir)
  endif()
endforeach()
file(REAL_PATH "${prefix}/include" want)
if(NOT include_dir STREQUAL want)
  message(FATAL_ERROR "pkg-config gave no include directory of the prefix: ${flags}")
endif()
run(${CXX} -std=c++17 ${consumer}/main.cpp ${flags} -o ${WORK_DIR}/consumer_pc)
run(${WORK_DIR}/consumer_pc)
expect_consumer_ok()
message(STATUS "pkg-config: ${last_output}")

# add_subdirectory of the source tree.
run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK_DIR}/subdir -DSHMARRAY_SOURCE=${SOURCE_DIR}
    -DCMAKE_CXX_COMPILER=${CXX})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/subdir)
run(${WORK_DIR}/subdir/consumer)
expect_consumer_ok()
run(${WORK_DIR}/subdir/consumer_adapters)
expect_consumer_ok()
message(STATUS "add_subdirectory: ${last_output}")
# Installing the parent project installs nothing of shmarray's.
run(${CMAKE_COMMAND} --install ${WORK_DIR}/subdir --prefix ${WORK_DIR}/subdir-prefix)
file(GLOB_RECURSE installed ${WORK_DIR}/subdir-prefix/*)
if(installed)
  message(FATAL_ERROR "installing a project that adds shmarray as a subdirectory installed: ${installed}")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
