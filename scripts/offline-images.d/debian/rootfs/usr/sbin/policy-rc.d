#!/bin/sh
# no service starts from package scripts inside images
exit 101
