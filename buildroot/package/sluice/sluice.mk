################################################################################
#
# sluice
#
################################################################################

# SLUICE_VERSION must equal the VERSION file at the top of the repository
# (test/initd_packages_test.go checks it).
SLUICE_VERSION = 0.1.0
SLUICE_SITE = $(call github,sluice-proxy,sluice,v$(SLUICE_VERSION))
SLUICE_LICENSE = Apache-2.0
SLUICE_LICENSE_FILES = LICENSE
SLUICE_GOMOD = github.com/sluice-proxy/sluice
SLUICE_BUILD_TARGETS = cmd/sluice
SLUICE_INSTALL_BINS = sluice
SLUICE_LDFLAGS = -s -w -X main.version=$(SLUICE_VERSION)

define SLUICE_INSTALL_CONF
	$(INSTALL) -D -m 0644 $(SLUICE_PKGDIR)/sluice.conf $(TARGET_DIR)/etc/sluice.conf
endef
SLUICE_POST_INSTALL_TARGET_HOOKS += SLUICE_INSTALL_CONF

define SLUICE_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/init.d/S50sluice $(TARGET_DIR)/etc/init.d/S50sluice
endef

$(eval $(golang-package))
