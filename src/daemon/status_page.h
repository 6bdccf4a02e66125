/* The status page served at /: one self-contained HTML document (no external script, font or
 * stylesheet) that renders /status as tables and refreshes every 2 seconds. */
#ifndef SLUICE_STATUS_PAGE_H
#define SLUICE_STATUS_PAGE_H

extern const char status_page_html[];

#endif
