package sysmon

import "strings"

// Setting is the GODEBUG setting Reexec adds.
const Setting = "schedtrace=2147483647"

// withSetting returns the GODEBUG value to restart with, and false when
// godebug (the current value) names schedtrace or scheddetail already:
// the user's choice (GODEBUG=schedtrace=0 keeps the runtime's default),
// which Setting would change. Keys are matched as the runtime reads them.
func withSetting(godebug string) (string, bool) {
	for field := range strings.SplitSeq(godebug, ",") {
		if key, _, _ := strings.Cut(field, "="); key == "schedtrace" || key == "scheddetail" {
			return "", false
		}
	}
	if godebug == "" {
		return Setting, true
	}
	return godebug + "," + Setting, true
}
