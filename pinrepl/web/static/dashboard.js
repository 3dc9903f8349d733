// pinrepl's dashboard: the one behaviour htmx does not have by default.
// A page or an action answered with an error page (a bad filter, an unknown run, a refused
// action) replaces the page, as it would without htmx; a poll that failed (the database
// away for a moment) leaves the page as it was, and the next poll tries again.
document.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.boosted && event.detail.xhr.status >= 400) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
